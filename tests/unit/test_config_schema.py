"""The schema's two single sources: a key's choices are its Literal type, and its default
is in default.toml alone (the dataclasses declare none)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from hvdbench import config
from hvdbench.errors import UsageError


def test_a_key_with_choices_is_typed_as_a_literal_of_exactly_those_choices() -> None:
    for key in config.all_keys():
        section, name = key.split(".")
        hint = config.field_hint(section, name)
        choices = config.section_fields(section)[name].metadata["choices"]
        if typing.get_origin(hint) is typing.Literal:
            assert choices == typing.get_args(hint), key
        else:
            assert choices is None, f"{key} has choices but its type is {hint}"


def test_the_choice_keys_are_literals() -> None:
    for key in (
        "mode.name",
        "model.name",
        "data.source",
        "train.optimizer",
        "train.mixed_precision",
        "launch.launcher",
    ):
        section, name = key.split(".")
        assert typing.get_origin(config.field_hint(section, name)) is typing.Literal, key


def test_defaults_live_in_default_toml_only() -> None:
    for section in config.SECTIONS:
        for f in config.section_fields(section).values():
            assert f.default is dataclasses.MISSING, f"{section}.{f.name}"
            assert f.default_factory is dataclasses.MISSING, f"{section}.{f.name}"
    defaults = config.default_toml()
    cfg = config.load(None, [])
    for key in config.all_keys():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == defaults[section][name], key


def test_config_keys_lists_the_choices() -> None:
    text = config.describe()
    assert '  train.optimizer (str: "sgd" | "momentum" | "rmsprop" | "adam", default ' in text


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("launch.controller", "launch.horovodrun_controller", '"mpi"'),
        ("horovod.fusion_threshold_mb", "horovod.fusion_threshold_mib", "32.0"),
    ],
)
def test_a_renamed_key_names_its_new_name(tmp_path: Path, old: str, new: str, value: str) -> None:
    assert config.RENAMED_KEYS[old] == new
    with pytest.raises(UsageError, match=f"'{old}' was replaced by '{new}'"):
        config.load(None, [f"--{old}={value.strip(chr(34))}"])
    section, key = old.split(".")
    path = tmp_path / "old.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(UsageError, match=f"'{old}' was replaced by '{new}'"):
        config.load(str(path), [])


def test_allreduce_old_controller_flag_names_the_new_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hvdbench.cli import main

    assert main(["allreduce", "--controller", "mpi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--controller was renamed to --horovodrun-controller (see --help)")
    assert "\n" not in err
