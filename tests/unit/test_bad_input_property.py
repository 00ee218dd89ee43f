"""Property: malformed configs and overrides never crash. Each gives exit code 2, a single
line naming the offending key, and no file written. Runs in-process on the CLI's main(argv),
derandomized; the config layer imports no TensorFlow, so this is fast."""

from __future__ import annotations

import os
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvdbench import config
from hvdbench.cli import main

KEYS = config.all_keys()
IDENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
JUNK = st.text(alphabet="abcxyz!@#%^&*()[]{} ", min_size=1, max_size=10).filter(
    lambda t: t.strip().lower() not in ("true", "false", "yes", "no", "on", "off", "inf", "nan")
)


def field_meta(key: str) -> tuple[type, typing.Mapping[str, typing.Any]]:
    section, name = key.split(".")
    return config.field_type(section, name), config.section_fields(section)[name].metadata


@st.composite
def bad_override(draw: st.DrawFn) -> tuple[str, str]:
    """(argument, the key the message must name)."""
    kind = draw(st.sampled_from(["unknown_key", "unknown_section", "wrong_type", "out_of_range"]))
    if kind == "unknown_key":
        section = draw(st.sampled_from(config.SECTIONS))
        name = draw(IDENT.filter(lambda n: n not in config.section_fields(section)))
        return f"--{section}.{name}={draw(JUNK)}", f"{section}.{name}"
    if kind == "unknown_section":
        section = draw(IDENT.filter(lambda s: s not in config.SECTIONS))
        return f"--{section}.x=1", section
    if kind == "wrong_type":
        key = draw(st.sampled_from([k for k in KEYS if field_meta(k)[0] in (int, float, bool)]))
        tp, _ = field_meta(key)
        value = (
            draw(JUNK)
            if tp is not int
            else draw(st.sampled_from(["1.5", "ten", "1e3", "0x10", ""]))
        )
        return f"--{key}={value}", key
    bounded = [
        k for k in KEYS if field_meta(k)[1]["min"] is not None or field_meta(k)[1]["choices"]
    ]
    key = draw(st.sampled_from(bounded))
    tp, meta = field_meta(key)
    if meta["choices"]:
        value = draw(IDENT.filter(lambda v: v not in meta["choices"]))
    else:
        below = draw(st.integers(min_value=1, max_value=10**6))
        value = str(int(meta["min"]) - below) if tp is int else repr(meta["min"] - below / 7)
    return f"--{key}={value}", key


@st.composite
def bad_file(draw: st.DrawFn) -> tuple[str, str]:
    """(TOML text, the key the message must name)."""
    key = draw(st.sampled_from(KEYS))
    section, name = key.split(".")
    tp, _ = field_meta(key)
    if draw(st.booleans()):
        wrong = {str: "1", int: '"seven"', float: '"x"', bool: '"yes"'}[tp]
        return f"[{section}]\n{name} = {wrong}\n", key
    other = draw(IDENT.filter(lambda n: n not in config.section_fields(section)))
    return f"[{section}]\n{other} = 1\n", f"{section}.{other}"


def assert_rejected(capsys, argv: list[str], key: str, out_dir: str) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hvdbench: error: ")
    assert key in lines[0], (key, lines[0])
    assert "Traceback" not in err
    assert not os.path.exists(out_dir)


PROPERTY = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@PROPERTY
@given(case=bad_override(), command=st.sampled_from([["run", "--dry-run"], ["config", "print"]]))
def test_bad_override(capsys, tmp_path, case, command):
    arg, key = case
    out_dir = str(tmp_path / "out")
    assert_rejected(capsys, [*command, f"--output.dir={out_dir}", arg], key, out_dir)


@PROPERTY
@given(case=bad_file())
def test_bad_file(capsys, tmp_path, case):
    text, key = case
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out_dir = str(tmp_path / "out")
    assert_rejected(
        capsys, ["run", "--dry-run", str(path), f"--output.dir={out_dir}"], key, out_dir
    )


@PROPERTY
@given(np_=st.integers(min_value=2, max_value=64), data=st.data())
def test_impossible_host_arithmetic(capsys, tmp_path, np_, data):
    slots = data.draw(
        st.lists(st.integers(1, 4), min_size=1, max_size=4).filter(lambda s: sum(s) < np_)
    )
    hosts = ",".join(f"n{i}:{s}" for i, s in enumerate(slots))
    out_dir = str(tmp_path / "out")
    assert_rejected(
        capsys,
        [
            "run",
            "--dry-run",
            f"--launch.np={np_}",
            f"--launch.hosts={hosts}",
            f"--output.dir={out_dir}",
        ],
        "launch.hosts",
        out_dir,
    )
