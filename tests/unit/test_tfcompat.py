"""Keras 2 in every hvdbench process, whatever TensorFlow is installed, and one line where
it cannot be had; Horovod mode's one line in an environment without Horovod."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hvdbench import tfcompat
from hvdbench.errors import UsageError
from tests.conftest import REPO, base_env

TF = tfcompat.tensorflow_version() or "0.0"
TF_MINOR = tuple(int(x) for x in TF.split(".")[:2])


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    child = base_env(env)
    child.pop("TF_USE_LEGACY_KERAS", None)
    child.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=child,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("outside", [None, "0"])
def test_importing_hvdbench_selects_keras_2_before_tensorflow_is_imported(outside):
    env = {} if outside is None else {"TF_USE_LEGACY_KERAS": outside}
    out = python(
        "import os, sys, hvdbench.config; "
        "print(os.environ.get('TF_USE_LEGACY_KERAS', 'unset'), 'tensorflow' in sys.modules)",
        **env,
    )
    assert out.returncode == 0, out.stderr
    # 2.16 and newer: set, whatever was outside; up to 2.15: left as it was
    expected = "1" if tfcompat.needs_legacy_keras(TF) else (outside or "unset")
    assert out.stdout.split() == [expected, "False"]


@pytest.mark.parametrize(
    ("version", "needed"),
    [("2.14.1", False), ("2.15.1", False), ("2.16.2", True), ("2.16.0rc0", True),
     ("2.21.0", True), ("3.0.0", True), (None, True), ("unknown", True)],
)  # fmt: skip
def test_legacy_keras_is_selected_from_2_16_on_and_left_alone_before(version, needed):
    assert tfcompat.needs_legacy_keras(version) is needed
    if version is not None:  # None: use_legacy_keras reads the installed version
        env: dict[str, str] = {}
        tfcompat.use_legacy_keras(env, tf_version=version)
        assert env == ({"TF_USE_LEGACY_KERAS": "1"} if needed else {})


def test_tf_keras_is_keras_2_in_an_hvdbench_process():
    out = python(
        "import json, hvdbench.tfcompat as t, tensorflow as tf; "
        "print(json.dumps(t.require_keras2())); "
        "print(type(tf.keras.layers.Dense(1)).__module__)"
    )
    assert out.returncode == 0, out.stderr
    info_line, module = out.stdout.strip().splitlines()[-2:]
    import json

    info = json.loads(info_line)
    assert info["version"].startswith("2.")
    if TF_MINOR >= (2, 16):
        assert info["flavour"] == "tf-keras" and module.startswith("tf_keras.")
    else:
        assert info["flavour"] == "keras 2" and module.startswith("keras.")


def test_horovod_missing_names_where_horovod_builds(monkeypatch):
    monkeypatch.setattr(tfcompat, "horovod_installed", lambda: False)
    # a release outside the matrix, and one inside it (a GPU build of 2.20 has no Horovod)
    monkeypatch.setattr(tfcompat, "tensorflow_version", lambda: "2.22.0")
    with pytest.raises(UsageError) as e:
        tfcompat.require_horovod(("parameter_server", "collective_all_reduce"))
    msg = str(e.value)
    assert "\n" not in msg
    newest = tfcompat.HOROVOD_TF[-1]
    assert msg.startswith(
        "mode.name: 'horovod' needs Horovod; hvdbench does not build Horovod 0.28.1 "
    )
    assert "against TensorFlow 2.22.0. The newest TensorFlow Horovod builds against is " in msg
    monkeypatch.setattr(tfcompat, "tensorflow_version", lambda: "2.20.0")
    with pytest.raises(UsageError) as e:
        tfcompat.require_horovod(("parameter_server", "collective_all_reduce"))
    assert str(e.value).startswith(
        "mode.name: 'horovod' needs Horovod; Horovod is not installed with TensorFlow 2.20.0. "
    )
    assert (
        f"{tfcompat.TF_PINS[newest]}: make install TF={newest} (with GPU=1: 2.18.1, TF=2.18)."
        in msg
    )
    assert "Modes that run here: parameter_server, collective_all_reduce" in msg


def run_without(module: str, code: str, cwd) -> subprocess.CompletedProcess[str]:
    """``code`` after ``from hvdbench.cli import main`` in a process where ``module`` is
    hidden: sys.modules' None makes its import fail and find_spec say it is not there."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.modules[{module!r}] = None; from hvdbench.cli import main; {code}",
        ],
        env=base_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_horovod_mode_without_horovod_exits_2_with_one_line_before_tensorflow(tmp_path):
    # An environment without Horovod, also where this one has it: sys.modules' None makes
    # `import horovod` fail and find_spec say it is not there.
    start = time.monotonic()
    out = run_without(
        "horovod", f"sys.exit(main(['run', '--np', '2', '--output.dir={tmp_path}']))", tmp_path
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stderr
    line = out.stderr.strip()
    assert line.startswith("hvdbench: error: mode.name: 'horovod' needs Horovod")
    assert f"make install TF={tfcompat.HOROVOD_TF[-1]}" in line
    assert "parameter_server" in line and "collective_all_reduce" in line
    assert time.monotonic() - start < 20  # no TensorFlow import
    assert not list(tmp_path.iterdir())


def test_the_installed_check_reports_keras_2():
    out = python("import sys, hvdbench.tfcompat as t; sys.exit(t.main())")
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith(f"TensorFlow {TF}, Keras 2.")
    assert (
        "Horovod installed" if tfcompat.horovod_installed() else "Horovod not installed"
    ) in last


def test_summaries_without_tensorboard_exit_2_with_one_line_before_tensorflow(tmp_path):
    # TensorFlow 2.20 and newer do not install TensorBoard; hidden here the same way.
    code = (
        f"rc = main(['run', '--mode.name=replicated', '--summary.dir={tmp_path / 'tb'}', "
        f"'--output.dir={tmp_path / 'out'}']); print('tensorflow' in sys.modules); sys.exit(rc)"
    )
    out = run_without("tensorboard", code, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout.split() == ["False"] and len(out.stderr.splitlines()) == 1, out.stderr
    line = out.stderr.strip()
    assert line.startswith("hvdbench: error: summary.dir: TensorBoard summaries need the")
    assert f"pip install 'tensorboard~={tfcompat.minor(TF)}.0'" in line
    assert not list(tmp_path.iterdir())
