"""The local launcher's supervision of ps tasks, on real short-lived shell processes (no
TensorFlow): a ps that dies while the workers run is restarted, a bounded number of times."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from hvdbench import spawn
from hvdbench.cluster import Role

pytestmark = pytest.mark.timeout(60)

DIES = "kill -9 $$"  # a ps killed by SIGKILL
STAYS = "sleep 1.5"  # a ps that leaves (exit 0) after the workers, as told by the chief


class Tasks:
    def __init__(self, ps_scripts: list[str], worker_script: str) -> None:
        self.ps_scripts = list(ps_scripts)
        self.started: list[subprocess.Popen[bytes]] = []
        self.procs: dict[Role, subprocess.Popen[bytes]] = {}
        self.start(Role("ps", 0))
        self.procs[Role("worker", 0)] = self._popen(worker_script)

    def _popen(self, script: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
        self.started.append(proc)
        return proc

    def start(self, role: Role) -> subprocess.Popen[bytes]:
        proc = self._popen(self.ps_scripts.pop(0))
        self.procs[role] = proc
        return proc

    def kill_all(self) -> None:
        for proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def test_a_lost_ps_is_restarted_and_the_job_succeeds(capsys):
    tasks = Tasks([DIES, STAYS], "sleep 1")
    try:
        assert spawn._supervise(tasks.procs, tasks.start, max_restarts=3) == 0
    finally:
        tasks.kill_all()
    err = capsys.readouterr().err
    assert "ps task 0 exited with code -9; restarting it on its port (restart 1 of " in err
    assert "fault.ps_max_restarts=3" in err


def test_restarts_are_bounded(capsys):
    tasks = Tasks([DIES, DIES, DIES], "sleep 30")
    try:
        assert spawn._supervise(tasks.procs, tasks.start, max_restarts=1) == 1
    finally:
        tasks.kill_all()
    err = capsys.readouterr().err
    assert err.count("restarting it") == 1
    assert "ps task 0 exited with code -9; stopping the other tasks" in err


def test_no_restart_when_disabled(capsys):
    tasks = Tasks([DIES], "sleep 30")
    try:
        assert spawn._supervise(tasks.procs, tasks.start, max_restarts=0) == 1
    finally:
        tasks.kill_all()
    assert "restarting" not in capsys.readouterr().err
