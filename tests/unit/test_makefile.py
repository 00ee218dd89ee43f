"""The install commands the Makefile runs, CPU and GPU, as `make -n` prints them.

The GPU path cannot run here (no GPU, no CUDA); these tests pin down what it would run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from hvdbench import tfcompat
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def dry_run(*args: str) -> list[str]:
    return make_n("VENV=/nonexistent/venv", *args)


# The Makefile's own choices, even under `make test TF=2.x VENV=...`, whose command-line
# variables reach this process's children through MAKEFLAGS and the environment.
_OVERRIDABLE = re.findall(r"^(\w+) \?=", (REPO / "Makefile").read_text(), re.M)
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", *_OVERRIDABLE)
}


def make_n(*args: str) -> list[str]:
    """What ``make install`` would run, whatever is installed."""
    out = subprocess.run(
        ["make", "-n", "-B", "install", *args],
        cwd=REPO,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def line_with(lines: list[str], needle: str) -> str:
    found = [line for line in lines if needle in line]
    assert found, f"no line with {needle!r} in:\n" + "\n".join(lines)
    return found[0]


def test_cpu_build():
    lines = dry_run()
    deps = line_with(lines, 'pip install -q "tensorflow')
    assert f'"tensorflow-cpu=={default_pin()}"' in deps and "mpi4py" in deps
    hvd = line_with(lines, "--no-build-isolation --no-cache-dir")  # from PyPI or patched sdist
    assert hvd.endswith(("horovod==0.28.1", "/horovod-src/horovod-0.28.1"))
    for flag in (
        "HOROVOD_WITH_TENSORFLOW=1",
        "HOROVOD_WITH_MPI=1",
        "HOROVOD_WITH_GLOO=1",
        "HOROVOD_WITHOUT_PYTORCH=1",
        "HOROVOD_WITHOUT_MXNET=1",
        "--no-build-isolation",
    ):
        assert flag in hvd
    assert "NCCL" not in hvd
    check = line_with(lines, "check-build")
    assert check.endswith("--require TensorFlow,MPI,Gloo")


def test_gpu_build_uses_nccl_and_bypasses_the_wheel_cache():
    lines = dry_run("GPU=1", "CUDA_HOME=/usr/local/cuda", "NCCL_HOME=/opt/nccl")
    assert f'"tensorflow[and-cuda]=={default_pin("TF_DEFAULT_GPU")}"' in line_with(
        lines, 'pip install -q "tensorflow'
    )
    hvd = line_with(lines, "horovod==0.28.1")
    for flag in (
        "HOROVOD_GPU_OPERATIONS=NCCL",
        "HOROVOD_CUDA_HOME=/usr/local/cuda",
        "HOROVOD_NCCL_HOME=/opt/nccl",
        "--no-cache-dir",
        "--no-build-isolation",
        "HOROVOD_WITH_TENSORFLOW=1",
        "HOROVOD_WITH_MPI=1",
    ):
        assert flag in hvd
    assert line_with(lines, "check-build").endswith("--require TensorFlow,MPI,Gloo,NCCL")


def test_gpu_build_without_explicit_homes_lets_horovod_find_them():
    hvd = line_with(dry_run("GPU=1"), "horovod==0.28.1")
    assert "HOROVOD_CUDA_HOME" not in hvd and "HOROVOD_NCCL_HOME" not in hvd


def test_default_tensorflow_is_one_variable_and_its_venv_is_dot_venv():
    lines = make_n()  # the Makefile's own choice of venv
    pin = default_pin()  # TF_DEFAULT is the one line that sets the default TensorFlow
    deps = line_with(lines, 'pip install -q "tensorflow')
    assert f'"tensorflow-cpu=={pin}"' in deps
    assert deps.startswith(".venv/bin/python ")
    # A GPU build's default: the newest minor Horovod builds against unpatched, in .venv too
    gpu = make_var("TF_DEFAULT_GPU")
    assert gpu in tfcompat.HOROVOD_TF
    assert gpu not in tfcompat.HOROVOD_PATCHED_TF
    deps = line_with(make_n("GPU=1"), 'pip install -q "tensorflow')
    assert deps.startswith(".venv/bin/python ")
    assert f'"tensorflow[and-cuda]=={tfcompat.TF_PINS[gpu]}"' in deps


def test_makefile_matrix_is_tfcompat_matrix():
    pins = dict(re.findall(r"^TF_PIN_(\S+) := (\S+)$", makefile_text(), re.M))
    assert pins == tfcompat.TF_PINS
    assert make_var("TF_SUPPORTED").split() == list(tfcompat.TF_PINS)
    patched = tuple(make_var("HOROVOD_PATCHED_TF").split())
    assert patched == tfcompat.HOROVOD_PATCHED_TF
    assert tuple(make_var("HOROVOD_TF").split()) + patched == tfcompat.HOROVOD_TF
    assert make_var("TF_NEWEST") == list(tfcompat.TF_PINS)[-1]


@pytest.mark.parametrize("minor", list(tfcompat.TF_PINS))
def test_every_minor_installs_its_pin_into_its_own_venv(minor):
    lines = make_n(f"TF={minor}")
    pin = tfcompat.TF_PINS[minor]
    deps = line_with(lines, 'pip install -q "tensorflow')
    assert f'"tensorflow-cpu=={pin}"' in deps
    venv = ".venv" if minor == make_var("TF_DEFAULT") else f".venv-tf{minor}"
    assert deps.startswith(f"{venv}/bin/python ")
    # Keras 2 from 2.16 on: tf-keras of the same minor
    if minor in ("2.14", "2.15"):
        assert "tf-keras" not in deps
    else:
        assert f'"tf-keras~={minor}.0"' in deps
    keras_check = line_with(lines, "hvdbench.tfcompat")
    assert keras_check.startswith(f"{venv}/bin/python ")
    if minor in tfcompat.HOROVOD_PATCHED_TF:
        # the checksum-verified sdist, patched, then built from its directory
        sha = line_with(lines, "sha256sum -c -")
        assert "horovod-src/horovod-0.28.1.tar.gz" in sha
        patch = line_with(lines, "patch -d ")
        assert patch.endswith("< patches/horovod-0.28.1-cpu-without-xla-ops.patch")
        assert (REPO / "patches/horovod-0.28.1-cpu-without-xla-ops.patch").is_file()
        assert lines.index(sha) < lines.index(patch)
        hvd = line_with(lines, "--no-build-isolation --no-cache-dir")
        assert hvd.endswith("/horovod-src/horovod-0.28.1") and lines.index(patch) < lines.index(hvd)
        assert line_with(lines, "check-build").endswith("--require TensorFlow,MPI,Gloo")
    elif minor in tfcompat.HOROVOD_TF:
        hvd = line_with(lines, "horovod==0.28.1")
        assert "--no-cache-dir" in hvd and "--no-build-isolation" in hvd
        assert not [x for x in lines if "patch -d" in x]
        assert line_with(lines, "check-build").endswith("--require TensorFlow,MPI,Gloo")
    else:
        assert not [x for x in lines if "horovod==" in x or "check-build" in x], lines


def test_gpu_build_follows_the_matrix():
    lines = dry_run("GPU=1", "TF=2.18")
    deps = line_with(lines, 'pip install -q "tensorflow')
    assert '"tensorflow[and-cuda]==2.18.1"' in deps and '"tf-keras~=2.18.0"' in deps
    hvd = line_with(lines, "horovod==0.28.1")
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in hvd and "--no-cache-dir" in hvd
    assert line_with(lines, "check-build").endswith("--require TensorFlow,MPI,Gloo,NCCL")
    lines = dry_run("GPU=1", "TF=2.21")
    assert '"tensorflow[and-cuda]==2.21.0"' in line_with(lines, 'pip install -q "tensorflow')
    assert not [x for x in lines if "horovod==" in x]


def test_unsupported_tensorflow_is_refused_with_the_supported_list():
    out = subprocess.run(
        ["make", "-n", "install", "TF=2.13"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0
    assert "TF=2.13 is not supported; supported: " + " ".join(tfcompat.TF_PINS) in out.stderr


# As `make test` runs the unit tier: --keep-going, which a sub-make inherits.
KEEP_GOING = {**CLEAN_ENV, "MAKEFLAGS": "k"}


def test_a_venv_of_another_tensorflow_is_refused_untouched(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".hvdbench-tensorflow").write_text("tensorflow-cpu==2.14.1\n")
    before = sorted(p.name for p in venv.iterdir())
    out = subprocess.run(
        ["make", "install", "TF=2.18", f"VENV={venv}"],
        cwd=REPO,
        env=KEEP_GOING,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert (
        f"{venv} holds tensorflow-cpu==2.14.1; refusing to install tensorflow-cpu==2.18.1"
        in out.stderr
    )
    assert sorted(p.name for p in venv.iterdir()) == before
    assert (venv / ".hvdbench-tensorflow").read_text() == "tensorflow-cpu==2.14.1\n"


def test_a_venv_from_before_the_matrix_counts_as_tensorflow_2_14(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".stamp-deps-cpu").touch()
    out = subprocess.run(
        ["make", "install", "TF=2.21", f"VENV={venv}"],
        cwd=REPO,
        env=KEEP_GOING,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and "holds tensorflow-cpu==2.14.1" in out.stderr
    assert sorted(p.name for p in venv.iterdir()) == [".stamp-deps-cpu"]


def makefile_text() -> str:
    return (REPO / "Makefile").read_text()


def make_var(name: str) -> str:
    """The value of a simple (``:=``) Makefile variable, as the Makefile's own line sets it."""
    found = re.search(rf"^{name} := ?(.*)$", makefile_text(), re.M)
    assert found, f"the Makefile sets {name} on a line of its own"
    return found.group(1).strip()


def default_pin(variable: str = "TF_DEFAULT") -> str:
    return tfcompat.TF_PINS[make_var(variable)]
