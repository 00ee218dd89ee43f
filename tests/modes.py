"""How each mode is started with two compute ranks: two processes, or two devices in one
process for the local-device modes. Shared by the multi-process tests and `make perf`'s
real-data rows, so that every one of them runs the same six modes the same way."""

from __future__ import annotations

import typing

from hvdbench import config

MODES: tuple[str, ...] = typing.get_args(config.ModeName)  # the registry's order
LOCAL_DEVICE_MODES = config.LOCAL_DEVICE_MODES


def two_ranks(mode: str) -> list[str]:
    """`hvdbench run` flags for ``mode`` with two compute ranks."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    size = ["--mode.num_devices=2"] if mode in LOCAL_DEVICE_MODES else ["--np", "2"]
    return [f"--mode.name={mode}", *size]


def two_ranks_each(*modes: str) -> dict[str, list[str]]:
    """{mode: :func:`two_ranks` flags} for ``modes`` (all six by default), in that order."""
    return {m: two_ranks(m) for m in modes or MODES}
