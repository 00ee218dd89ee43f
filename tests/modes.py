"""How each mode is started with two compute ranks: two processes, or two devices in one
process for the local-device modes. Shared by the multi-process tests and `make perf`'s
real-data rows, so that every one of them runs the same six modes the same way."""

from __future__ import annotations

import typing

from hvdbench import config

MODES: tuple[str, ...] = typing.get_args(config.ModeName)  # the registry's order
LOCAL_DEVICE_MODES = config.LOCAL_DEVICE_MODES
IDLE_TIMEOUT_S = 60  # a ps task whose workers vanished exits this soon in tests, not in 120 s


def two_ranks(mode: str) -> list[str]:
    """`hvdbench run` flags for ``mode`` with two compute ranks."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    size = ["--mode.num_devices=2"] if mode in LOCAL_DEVICE_MODES else ["--np", "2"]
    return [f"--mode.name={mode}", *size]


def two_ranks_each(*modes: str) -> dict[str, list[str]]:
    """{mode: :func:`two_ranks` flags} for ``modes`` (all six by default), in that order."""
    return {m: two_ranks(m) for m in modes or MODES}


def bounded(mode: str) -> list[str]:
    """The tests' shorter ps idle timeout, for the modes with ps tasks only: the others do not
    read ``[ps]`` and refuse a value there."""
    return [f"--ps.idle_timeout_s={IDLE_TIMEOUT_S}"] if mode in config.PS_MODES else []


def bounded_args(args: typing.Sequence[str]) -> list[str]:
    """:func:`bounded` for the mode that ``args`` (``hvdbench run`` flags) name."""
    names = [a.split("=", 1)[1] for a in args if a.startswith("--mode.name=")]
    return bounded(names[-1] if names else config.load(None, []).mode.name)
