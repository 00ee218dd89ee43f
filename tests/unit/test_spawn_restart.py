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


def test_the_supervisor_names_the_lost_task_not_the_peer_that_noticed_it():
    """A killed worker's chief can exit (its watchdog saw the loss: EXIT_FAULT) within the
    same poll as the worker: the line must name the killed worker, whatever the order."""
    from hvdbench.components.watchdog import EXIT_FAULT
    from hvdbench.launch.job import Role

    chief, killed, ps = Role("worker", 0), Role("worker", 2), Role("ps", 0)
    assert spawn.root_cause([(chief, EXIT_FAULT), (killed, -9)]) == (killed, -9)
    assert spawn.root_cause([(killed, -9), (chief, EXIT_FAULT)]) == (killed, -9)
    # otherwise ps tasks first, then workers, by index, as before
    assert spawn.root_cause([(ps, 1), (killed, -9)]) == (ps, 1)
    assert spawn.root_cause([(chief, EXIT_FAULT)]) == (chief, EXIT_FAULT)
