"""When a lost worker is left out (sync ps with backup workers) and when it still ends the
job: the policy, and the local launcher's supervision on real short-lived shell processes
(no TensorFlow)."""

from __future__ import annotations

import pytest

from hvdbench import config
from hvdbench.modes.grpc import lost_workers, spawn
from tests.shell_tasks import ShellTasks

pytestmark = pytest.mark.timeout(60)

PS = ["--mode.name=parameter_server", "--launch.np=3"]


def cfg(*overrides: str) -> config.Config:
    return config.load(None, [*PS, *overrides])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--ps.replicas_to_aggregate=2"], True),
        (["--ps.replicas_to_aggregate=2", "--mode.name=distributed_replicated"], True),
        ([], False),  # 0: all workers, no backups
        (["--ps.replicas_to_aggregate=3"], False),
        (["--ps.replicas_to_aggregate=2", "--ps.sync=false"], False),
        (["--ps.replicas_to_aggregate=2", "--fault.tolerate_lost_workers=false"], False),
        (["--ps.replicas_to_aggregate=2", "--fault.watchdog=false"], False),
        (["--mode.name=horovod"], False),  # which refuses ps.replicas_to_aggregate
    ],
)
def test_only_sync_with_backup_workers_tolerates(overrides, expected):
    assert lost_workers.tolerates(cfg(*overrides), 3) is expected


def test_too_few_names_every_lost_worker():
    assert lost_workers.too_few([2], 3, 2) is None
    message = lost_workers.too_few([2, 1], 3, 2)
    assert message is not None
    assert message.startswith("lost worker 1, worker 2: 1 of 3 workers left, fewer than")
    assert "ps.replicas_to_aggregate=2" in message


# ps 0 leaves (exit 0) after the workers, as told by the chief; it is never restarted
PS_STAYS = ["sleep 1.5"]


def test_a_lost_backup_worker_is_left_out(capsys):
    with ShellTasks(PS_STAYS, ["sleep 1", "sleep 1", "kill -9 $$"]) as tasks:
        assert spawn._supervise(tasks.procs, tasks.start, 0, backup_needed=2) == 0
    err = capsys.readouterr().err
    assert (
        "worker task 2 exited with code -9; worker 2 was lost; the job continues with 2 of 3" in err
    )


def test_without_backup_workers_a_lost_worker_ends_the_job(capsys):
    with ShellTasks(PS_STAYS, ["sleep 30", "sleep 30", "kill -9 $$"]) as tasks:
        assert spawn._supervise(tasks.procs, tasks.start, 0) == 1
    assert "worker task 2 exited with code -9; stopping the other tasks" in capsys.readouterr().err


def test_a_lost_chief_still_ends_the_job(capsys):
    with ShellTasks(PS_STAYS, ["kill -9 $$", "sleep 30", "sleep 30"]) as tasks:
        assert spawn._supervise(tasks.procs, tasks.start, 0, backup_needed=2) == 1
    assert "worker task 0 exited with code -9; stopping the other tasks" in capsys.readouterr().err


def test_too_few_left_ends_the_job_after_the_chief_grace(capsys):
    # the chief (sleep 30) does not leave within its grace: the job ends anyway, named
    with ShellTasks(PS_STAYS, ["sleep 30", "kill -9 $$", "kill -9 $$"]) as tasks:
        code = spawn._supervise(tasks.procs, tasks.start, 0, backup_needed=2, chief_grace_s=0.5)
    assert code == 1
    err = capsys.readouterr().err
    assert (
        "lost worker 1, worker 2: 1 of 3 workers left, fewer than ps.replicas_to_aggregate=2" in err
    )


def test_the_chief_watchdog_leaves_out_a_rank_whose_process_exited():
    """A peer's connection closes: the callback is asked, the peer is marked lost and the
    watchdog keeps watching (it would have ended the process otherwise)."""
    import socket
    import time

    from hvdbench.components import watchdog

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[int] = []

    def on_lost(peer: watchdog.Peer) -> str | None:
        seen.append(peer.rank)
        return None

    dog = watchdog.Watchdog(
        0,
        "here",
        interval=0.1,
        timeout=10,
        step_deadline=0,
        on_abort=lambda message: None,
        progress=watchdog.Progress(),
        on_lost=on_lost,
    )
    dog.start([{"rank": 2, "host": "there", "addr": "127.0.0.1", "port": port}])
    try:
        conn, _ = listener.accept()
        conn.close()  # the peer's process exited
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == [2]
        assert dog.peers[0].lost and dog.peers[0].sock is None
        assert dog.running
    finally:
        dog.stop()
        listener.close()
