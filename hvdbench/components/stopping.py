"""Stopping early and together when the job is told to stop.

Slurm warns a job before its time limit with ``--signal`` (SIGUSR1 here), and SIGTERM is
what schedulers send at the limit. A rank that gets one only sets a flag: leaving at once
could leave the other ranks blocked in a collective. Every ``stop.check_every`` steps the
benchmark loop combines the flags with the mode's collective ``any_rank``, so every rank
stops after the same step; the chief writes the steps done, marked incomplete, and the
process exits with the conventional ``128 + signal number``.

The handlers are installed before TensorFlow is imported, so that a signal arriving during
the (slow) start-up is not fatal but stops the run at its first agreement.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)


@dataclass
class StopRequest:
    """The first stop signal this process received, if any."""

    signum: int | None = None
    installed: bool = False
    received: list[int] = field(default_factory=list)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def handle(self, signum: int, _frame: object = None) -> None:
        self.received.append(signum)
        if self.signum is None:
            self.signum = signum


REQUEST = StopRequest()
_PREVIOUS: dict[int, object] = {}


def install() -> StopRequest:
    """Install the flag-setting handlers (once per process) and return the request."""
    if not REQUEST.installed:
        for s in STOP_SIGNALS:
            _PREVIOUS[s] = signal.signal(s, REQUEST.handle)
        REQUEST.installed = True
    return REQUEST


def uninstall() -> None:
    """Put back the handlers ``install`` replaced and forget any request (for tests and
    for embedding hvdbench in a longer-lived process)."""
    if REQUEST.installed:
        for s, previous in _PREVIOUS.items():
            signal.signal(s, previous)  # type: ignore[arg-type]
        _PREVIOUS.clear()
        REQUEST.installed = False
    REQUEST.signum = None
    REQUEST.received.clear()


def should_check(step: int, check_every: int) -> bool:
    """Whether the ranks combine their stop flags after ``step`` (1-based, loop-wide)."""
    return step % check_every == 0


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
