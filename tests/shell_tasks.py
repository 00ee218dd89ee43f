"""A local job's tasks as short shell processes, for testing ``spawn._supervise`` without
TensorFlow: ps 0 and the workers, each in its own process group."""

from __future__ import annotations

import os
import signal
import subprocess
from types import TracebackType

from hvdbench.launch.job import Role


class ShellTasks:
    """``ps_scripts[0]`` is ps 0's first life and each further script one restart of it
    (a restart beyond them fails the test); ``workers`` are the workers' scripts.
    Leaving the ``with`` block kills every process started, restarts included."""

    def __init__(self, ps_scripts: list[str], workers: list[str]) -> None:
        self.ps_scripts = list(ps_scripts)
        self.started: list[subprocess.Popen[bytes]] = []
        self.procs: dict[Role, subprocess.Popen[bytes]] = {}
        self.start(Role("ps", 0))
        for i, script in enumerate(workers):
            self.procs[Role("worker", i)] = self._popen(script)

    def _popen(self, script: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
        self.started.append(proc)
        return proc

    def start(self, role: Role) -> subprocess.Popen[bytes]:
        """The supervisor's (re)start of a task."""
        if not role.is_ps or not self.ps_scripts:
            raise AssertionError(f"no restart expected ({role})")
        proc = self._popen(self.ps_scripts.pop(0))
        self.procs[role] = proc
        return proc

    def __enter__(self) -> ShellTasks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
