"""The shared config: precedence, types, bounds, every kind of bad input, and no TensorFlow."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from hvdbench import config
from hvdbench.cli import main
from hvdbench.errors import UsageError
from tests.conftest import REPO, base_env


def write(tmp_path, text: str, name: str = "c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_cover_every_key_exactly():
    defaults = config.default_toml()
    keys = {f"{s}.{k}" for s, values in defaults.items() for k in values}
    assert keys == set(config.all_keys())


def test_every_field_is_documented():
    for key in config.all_keys():
        section, name = key.split(".")
        assert len(config.section_fields(section)[name].metadata["help"]) > 10, key


def test_precedence_default_then_file_then_cli(tmp_path):
    path = write(tmp_path, "[train]\nnum_steps = 7\nper_device_batch_size = 16\n")
    cfg = config.load(path, ["--train.num_steps=9"])
    assert cfg.train.num_steps == 9  # CLI beats file
    assert cfg.train.per_device_batch_size == 16  # file beats default
    assert cfg.train.optimizer == config.default_toml()["train"]["optimizer"]


def test_override_with_space_separated_value():
    rest, overrides = config.split_overrides(["run", "--train.num_steps", "5", "--np", "2"])
    assert rest == ["run", "--np", "2"]
    assert overrides == ["--train.num_steps=5"]
    assert config.load(None, overrides).train.num_steps == 5


def test_types_are_coerced_from_strings():
    cfg = config.load(
        None,
        [
            "--train.jit_compile=yes",
            "--train.learning_rate=0.5",
            "--horovod.fusion_threshold_mib=32",
            "--model.image_size=64",
        ],
    )
    assert cfg.train.jit_compile is True
    assert cfg.train.learning_rate == 0.5
    assert cfg.horovod.fusion_threshold_mib == 32.0
    assert isinstance(cfg.model.image_size, int) and cfg.model.image_size == 64


def test_int_in_toml_is_accepted_for_float(tmp_path):
    cfg = config.load(write(tmp_path, "[train]\nlearning_rate = 1\n"))
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)


def test_config_is_frozen():
    cfg = config.load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.num_steps = 3  # type: ignore[misc]


def test_toml_round_trip(tmp_path):
    cfg = config.load(None, ["--model.name=mnist_mlp", '--horovod.timeline=/tmp/t "x".json'])
    again = config.load(write(tmp_path, config.to_toml(cfg)))
    assert again == cfg


def test_replace_revalidates():
    cfg = config.load()
    assert config.replace(cfg, **{"launch.np": 4}).launch.np == 4
    with pytest.raises(UsageError, match="launch.np"):
        config.replace(cfg, **{"launch.np": -1})


@pytest.mark.parametrize(
    "overrides, file_text, expected",
    [
        (
            ["--train.num_stepz=3"],
            None,
            "unknown config key 'train.num_stepz' (did you mean 'train.num_steps'?)",
        ),
        (["--trian.num_steps=3"], None, "unknown config section 'trian' (did you mean 'train'?)"),
        (["--train.num_steps=abc"], None, "train.num_steps: expected an integer, got 'abc'"),
        (
            ["--train.jit_compile=maybe"],
            None,
            "train.jit_compile: expected a boolean (true/false), got 'maybe'",
        ),
        (["--train.learning_rate=nan"], None, "train.learning_rate: expected a number, got 'nan'"),
        (["--train.num_steps=0"], None, "train.num_steps: must be >= 1, got 0"),
        (
            ["--train.per_device_batch_size=-4"],
            None,
            "train.per_device_batch_size: must be >= 1, got -4",
        ),
        (["--train.learning_rate=0"], None, "train.learning_rate: must be > 0.0, got 0.0"),
        (["--train.momentum=1.5"], None, "train.momentum: must be <= 1.0, got 1.5"),
        (
            ["--train.optimizer=adagrad"],
            None,
            "train.optimizer: 'adagrad' is not one of: sgd, momentum, rmsprop, adam",
        ),
        (
            ["--model.name=resnet9000"],
            None,
            "model.name: 'resnet9000' is not one of: trivial, mnist_mlp",
        ),
        (["--mode.name=magic"], None, "mode.name: 'magic' is not one of: horovod"),
        (
            ["--model.name=inception3", "--model.image_size=32"],
            None,
            "model.image_size: inception3 needs at least 75x75 pixels, got 32",
        ),
        (
            ["--launch.np=4", "--launch.hosts=a:1,b:2"],
            None,
            "launch.hosts: 3 slots in 'a:1,b:2' < launch.np(4)",
        ),
        (["--launch.hosts=a:x"], None, "launch.hosts: cannot read 'a:x'"),
        (["--train.num_steps"], None, "override '--train.num_steps' needs a value"),
        (["--train=3"], None, None),  # not a dotted key: argparse rejects it
        ([], '[train]\nnum_steps = "ten"\n', "train.num_steps: expected an integer, got str 'ten'"),
        ([], "[train]\nnum_steps = true\n", "train.num_steps: expected an integer, got bool True"),
        ([], "[train]\nbogus = 1\n", "unknown config key 'train.bogus'"),
        ([], "[bogus]\nx = 1\n", "unknown config section 'bogus'"),
        ([], "train = 3\n", "'train' in"),
        ([], "[train\n", "is not valid TOML"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, overrides, file_text, expected):
    args = ["config", "print"]
    if file_text is not None:
        args.append(write(tmp_path, file_text))
    code = main([*args, *overrides])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    if expected:
        assert expected in lines[0]


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hvdbench: error: config file '{tmp_path / 'nope.toml'}' does not exist"
    )


def test_bad_run_writes_nothing(tmp_path, capsys):
    out_dir = tmp_path / "results"
    assert main(["run", f"--output.dir={out_dir}", "--train.num_steps=-1"]) == 2
    assert not out_dir.exists()


def test_unknown_subcommand_is_one_line(capsys):
    assert main(["frobnicate"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_config_keys_documents_everything(capsys):
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    for key in config.all_keys():
        assert key in out


def test_config_layer_does_not_import_tensorflow_and_fails_fast():
    code = (
        "import sys, time; t = time.time()\n"
        "from hvdbench.cli import main\n"
        "rc = main(['run', '--train.num_steps=0'])\n"
        "assert rc == 2, rc\n"
        "rc = main(['run', '--np', '2', '--dry-run'])\n"
        "assert rc == 0, rc\n"
        "assert 'tensorflow' not in sys.modules and 'horovod' not in sys.modules\n"
        "print(time.time() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=base_env(),
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) < 1.0
