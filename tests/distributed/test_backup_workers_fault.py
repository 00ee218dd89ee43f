"""A non-chief worker dies in a synchronous parameter-server job with backup workers
(``ps.replicas_to_aggregate`` below the workers): the job goes on without it.

1 ps + 3 workers on loopback, launched and supervised by `hvdbench run`, aggregating 2
gradients per step. Worker 2 is killed with ``kill -9`` once the chief's record shows it
stepping; the job must reach its step target, exit 0, name the lost worker in its record
and leave no process behind. Losing a second worker leaves fewer than 2: the job must end,
naming it, instead of hanging. Every wait is bounded by a short config key; the times are
printed (``pytest -s``) for the report.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.distributed.cluster_helpers import leftover
from tests.distributed.test_graph_faults import Job, jobs  # noqa: F401 - the fixture

pytestmark = pytest.mark.distributed

BACKUP = [
    "--mode.name=parameter_server",
    "--np",
    "3",
    "--ps.replicas_to_aggregate=2",
    "--model.name=mnist_mlp",
    "--train.per_device_batch_size=8",
    "--train.num_warmup_steps=2",
    "--train.display_every=5",
    # detection timeouts, short: a ps that never hears from the chief again, a session
    # that never becomes ready, a step that never ends; heartbeats every 0.5 s
    "--ps.idle_timeout_s=20",
    "--fault.heartbeat_interval_s=0.5",
    "--fault.heartbeat_timeout_s=15",
    "--fault.step_deadline_s=20",
]


STEPS = 400


def worker_pid(job: Job, index: int) -> int:
    (line,) = [
        c
        for c in leftover(str(job.out))
        if "--cluster.job_name=worker" in c and f"--cluster.task_index={index} " in c + " "
    ]
    return int(line.split(":")[0])


def wait_until_stepping(job: Job, index: int, steps: int, timeout: float) -> None:
    """Until the chief's record shows worker ``index`` at ``steps`` measured steps."""
    deadline = time.monotonic() + timeout
    while True:
        assert job.proc.poll() is None, job.stdout[-2000:] + job.stderr[-2000:]
        assert time.monotonic() < deadline, "worker never seen stepping"
        for path in job.out.glob("*.json"):
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if int(rec.get("steps_completed", {}).get(str(index), 0)) >= steps:
                return
        time.sleep(0.1)


def wait_for_text(job: Job, text: str, timeout: float) -> float:
    """Seconds until ``text`` shows in the job's stderr."""
    start = time.monotonic()
    while text not in job.stderr:
        assert time.monotonic() - start < timeout, f"no {text!r} in time:\n{job.stderr[-2000:]}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_lost_backup_worker_training_continues(tmp_path, jobs):  # noqa: F811
    job = Job(tmp_path, "run", *BACKUP, f"--train.num_steps={STEPS}")
    jobs.append(job)
    wait_until_stepping(job, 2, 5, timeout=120)
    killed_at = time.monotonic()
    os.kill(worker_pid(job, 2), signal.SIGKILL)
    # the chief's watchdog (not only the launcher) left it out
    detected = wait_for_text(job, "warning: worker 2 was lost; the job continues with 2 of 3", 20)
    code = job.wait(timeout=120)
    ended = time.monotonic() - killed_at
    out, err = job.stdout, job.stderr
    assert code == 0, out[-3000:] + err[-3000:]
    assert "worker task 2 exited with code -9; worker 2 was lost; the job continues" in err
    rec = job.record()
    assert rec["status"] == "complete"
    # the two workers left reached the step target; the lost one is not in the totals
    assert [p["rank"] for p in rec["per_rank"]] == [0, 1]
    assert [len(p["step_times"]) for p in rec["per_rank"]] == [STEPS, STEPS]
    assert rec["totals"]["num_ranks"] == 2
    assert rec["totals"]["global_batch_size"] == 2 * 8
    assert rec["totals_cover_workers"] == [0, 1]
    assert rec["workers_started"] == 3 and rec["workers_finished"] == 2
    (lost,) = rec["lost_workers"]
    assert lost["worker"] == 2 and 5 <= lost["last_step_reported"] < STEPS  # killed mid-run
    assert "the job continued with 2 of 3 workers after losing worker 2" in out
    assert leftover(str(job.out)) == []
    print(
        f"\nbackup worker killed: the chief left it out {detected:.1f} s after the kill; "
        f"job finished {ended:.1f} s after the kill"
    )


def test_too_few_workers_left_ends_the_job_naming_them(tmp_path, jobs):  # noqa: F811
    job = Job(tmp_path, "run", *BACKUP, "--train.num_steps=2000")
    jobs.append(job)
    wait_until_stepping(job, 2, 5, timeout=120)
    killed_at = time.monotonic()
    os.kill(worker_pid(job, 2), signal.SIGKILL)
    wait_for_text(job, "warning: worker 2 was lost; the job continues with 2 of 3", 20)
    os.kill(worker_pid(job, 1), signal.SIGKILL)
    code = job.wait(timeout=60)
    ended = time.monotonic() - killed_at
    err = job.stderr
    assert code != 0
    assert (
        "lost worker 1, worker 2: 1 of 3 workers left, fewer than ps.replicas_to_aggregate=2" in err
    ), err[-3000:]
    rec = job.record()
    assert rec["status"] == "incomplete"
    assert 2 in [e["worker"] for e in rec["lost_workers"]]
    assert leftover(str(job.out)) == []
    print(f"\ntwo of three workers killed: job ended {ended:.1f} s after the first kill")


def test_without_backup_workers_a_lost_worker_still_ends_the_job(tmp_path, jobs):  # noqa: F811
    job = Job(tmp_path, "run", *BACKUP, "--ps.replicas_to_aggregate=0", "--train.num_steps=2000")
    jobs.append(job)
    wait_until_stepping(job, 2, 5, timeout=120)
    os.kill(worker_pid(job, 2), signal.SIGKILL)
    code = job.wait(timeout=60)
    assert code != 0
    assert "worker task 2 exited with code -9; stopping the other tasks" in job.stderr
    assert "the job continues" not in job.stderr
    assert job.record()["status"] == "incomplete"
    assert leftover(str(job.out)) == []


def test_a_worker_lost_after_its_steps_is_counted_once(tmp_path, jobs):  # noqa: F811
    """Worker 2 finishes its steps (it then keeps the others' steps going, unmeasured) and
    dies while worker 1, slowed, still measures: the chief must keep contributing gradients
    until worker 1 is done, counting worker 2 once (done and lost), or worker 1 would wait
    for ever for a second gradient."""
    steps = 100
    job = Job(
        tmp_path,
        "run",
        *BACKUP,
        f"--train.num_steps={steps}",
        "--ps.debug_slow_worker=1",
        "--ps.debug_slow_seconds=0.05",
        "--train.display_every=1",
    )
    jobs.append(job)
    # the chief and worker 2 step together (worker 1 is the slow backup): once the chief
    # has measured its steps, worker 2 has too, give or take the steps of one heartbeat
    wait_until_stepping(job, 0, steps, timeout=120)
    time.sleep(1.0)
    os.kill(worker_pid(job, 2), signal.SIGKILL)
    code = job.wait(timeout=120)
    out, err = job.stdout, job.stderr
    assert code == 0, out[-3000:] + err[-3000:]
    rec = job.record()
    assert rec["status"] == "complete"
    assert [len(p["step_times"]) for p in rec["per_rank"]] == [steps, steps]
    (lost,) = rec["lost_workers"]
    assert lost["worker"] == 2 and lost["last_step_reported"] == steps  # after its steps
    assert rec["mode_details"]["workers"][0]["drained_steps"] > 0  # the chief kept going
    assert leftover(str(job.out)) == []
