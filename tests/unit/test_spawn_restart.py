"""The local launcher's supervision of ps tasks, on real short-lived shell processes (no
TensorFlow): a ps that dies while the workers run is restarted, a bounded number of times."""

from __future__ import annotations

import pytest

from hvdbench.modes.grpc import spawn
from tests.shell_tasks import ShellTasks

pytestmark = pytest.mark.timeout(60)

DIES = "kill -9 $$"  # a ps killed by SIGKILL
STAYS = "sleep 1.5"  # a ps that leaves (exit 0) after the workers, as told by the chief


def test_a_lost_ps_is_restarted_and_the_job_succeeds(capsys):
    with ShellTasks([DIES, STAYS], ["sleep 1"]) as tasks:
        assert spawn._supervise(tasks.procs, tasks.start, max_restarts=3) == 0
    err = capsys.readouterr().err
    assert "ps task 0 exited with code -9; restarting it on its port (restart 1 of " in err
    assert "fault.ps_max_restarts=3" in err


def test_restarts_are_bounded(capsys):
    with ShellTasks([DIES, DIES, DIES], ["sleep 30"]) as tasks:
        assert spawn._supervise(tasks.procs, tasks.start, max_restarts=1) == 1
    err = capsys.readouterr().err
    assert err.count("restarting it") == 1
    assert "ps task 0 exited with code -9; stopping the other tasks" in err


def test_no_restart_when_disabled(capsys):
    with ShellTasks([DIES], ["sleep 30"]) as tasks:
        assert spawn._supervise(tasks.procs, tasks.start, max_restarts=0) == 1
    assert "restarting" not in capsys.readouterr().err
