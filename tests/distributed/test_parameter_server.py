"""The parameter-server mode with real processes and real gRPC servers on loopback.

Every run is checked to end with exit code 0 and with none of its processes left
(each run's processes carry its unique output directory on their command line).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, base_env, hvdbench, run
from tests.distributed.cluster_helpers import leftover, one_record

pytestmark = pytest.mark.distributed

TF_CPP_LOG = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] |"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
)
FAST = [
    "--model.name=trivial",
    "--train.num_warmup_steps=1",
    "--train.num_steps=5",
    "--train.display_every=5",
    "--ps.idle_timeout_s=60",
]


def run_ps(out: Path, *args: str, timeout: float = 180) -> dict:
    r = hvdbench(
        "run", "--mode.name=parameter_server", f"--output.dir={out}", *args, timeout=timeout
    )
    assert not r.timed_out, r.output[-3000:]
    assert r.returncode == 0, r.output[-3000:]
    assert "Traceback" not in r.output, r.output[-3000:]
    assert "total images/sec:" in r.stdout
    assert leftover(str(out)) == []
    return one_record(out)


@pytest.mark.parametrize(
    "sync,staged,num_ps",
    [(True, False, 1), (False, False, 1), (True, True, 1), (False, True, 2)],
    ids=["sync", "async", "sync-staged", "async-staged-2ps"],
)
def test_ps_run_reaches_its_step_target(tmp_path, sync, staged, num_ps):
    rec = run_ps(
        tmp_path,
        "--np",
        "2",
        f"--ps.num_ps={num_ps}",
        f"--ps.sync={str(sync).lower()}",
        f"--ps.staged_vars={str(staged).lower()}",
        *FAST,
    )
    d = rec["mode_details"]
    assert (d["num_ps"], d["num_workers"], d["sync"], d["staged_vars"]) == (num_ps, 2, sync, staged)
    assert d["replicas_to_aggregate"] == (2 if sync else None)
    assert rec["totals"]["num_ranks"] == 2 and rec["totals"]["num_steps"] == 5
    assert rec["totals"]["total_images_per_sec"] > 0
    assert [len(r["step_times"]) for r in rec["per_rank"]] == [5, 5]
    # Every worker's 6 steps (1 warm-up + 5) reached the ps. In sync mode a worker's
    # step k returns once update k-1 is applied (its token), so at least 5 updates.
    if sync:
        assert d["final_global_step"] >= 5
    else:
        assert d["final_global_step"] >= 12
    if num_ps == 2:
        assert all(b > 0 for b in d["placement"]["bytes_per_ps"])
    # The two workers on this host split its cores (the ps tasks float over all of them).
    assert [r["core_slot"] for r in rec["topology"]["ranks"]] == [[0, 2], [1, 2]]
    cpus = [set(r["cpus"]) for r in rec["topology"]["ranks"]]
    assert cpus[0] and cpus[1] and (len(os.sched_getaffinity(0)) < 2 or not cpus[0] & cpus[1])


def _staged_losses(tmp_path: Path, staged: bool) -> list[float]:
    out = tmp_path / ("staged" if staged else "plain")
    rec = run_ps(
        out,
        "--np",
        "1",
        "--ps.sync=false",
        f"--ps.staged_vars={str(staged).lower()}",
        "--model.name=mnist_mlp",
        "--train.optimizer=sgd",
        "--train.learning_rate=0.5",
        "--train.num_warmup_steps=0",
        "--train.num_steps=3",
    )
    return rec["chief_losses"]


def test_staged_vars_are_one_step_stale(tmp_path):
    """Same batch every step, so the loss is a function of the weights it was computed on:
    staged step k computes on the weights before update k-1."""
    plain = _staged_losses(tmp_path, staged=False)
    staged = _staged_losses(tmp_path, staged=True)
    assert staged[0] == pytest.approx(plain[0], rel=1e-6)  # w0
    assert staged[1] == pytest.approx(plain[0], rel=1e-6)  # still w0: one step stale
    assert staged[2] == pytest.approx(plain[1], rel=1e-5)  # w1 = w0 - lr * g(w0)
    assert plain[1] != pytest.approx(plain[0], rel=1e-3)  # the weights did move


def test_backup_worker_lets_the_others_step(tmp_path):
    """replicas_to_aggregate=1 of 2: while worker 1 sleeps 1 s before each step, the
    global step keeps advancing on worker 0's gradients alone."""
    rec = run_ps(
        tmp_path,
        "--np",
        "2",
        "--ps.replicas_to_aggregate=1",
        "--ps.debug_slow_worker=1",
        "--ps.debug_slow_seconds=1.0",
        "--model.name=trivial",
        "--train.num_warmup_steps=0",
        "--train.num_steps=4",
    )
    d = rec["mode_details"]
    assert d["replicas_to_aggregate"] == 1
    slow = d["workers"][1]["global_steps_seen"]
    assert len(slow) == 4
    gaps = [b - a for a, b in zip(slow, slow[1:])]
    assert max(gaps) >= 3, (slow, d["workers"][0])
    assert d["workers"][0]["drained_steps"] > 0  # the chief kept stepping after its own end
    # the rates of images applied and computed: one gradient of the two workers' a step
    b = rec["backup_workers"]
    computed = sum(len(w["global_steps_seen"]) + w["drained_steps"] for w in d["workers"])
    assert b["gradients_computed"] == computed
    assert b["gradients_applied"] == b["global_steps"] == d["final_global_step"]
    assert b["applied_share"] == pytest.approx(min(1.0, b["global_steps"] / computed))
    assert b["applied_images_per_sec"] < b["computed_images_per_sec"]
    assert b["computed_images_per_sec"] == rec["totals"]["total_images_per_sec"]


def test_mpirun_roles_from_ranks(tmp_path):
    """mpirun -np 3 with num_ps=1: rank 0 is the ps, ranks 1-2 the workers, chief rank 1.

    Long enough for a stop check inside the measured steps: while the chief writes its
    first record, worker 1 runs ahead (SyncReplicasOptimizer counts gradients, not
    workers), and a stop check that waited for every worker used to deadlock here, as it
    did under srun."""
    cmd = [
        "mpirun", "-np", "3", "--oversubscribe", "--bind-to", "none",
        sys.executable, "-m", "hvdbench", "run",
        "--mode.name=parameter_server", "--ps.num_ps=1", f"--output.dir={tmp_path}", *FAST,
        "--train.num_steps=30", "--train.display_every=10", "--stop.check_every=10",
    ]  # fmt: skip
    r = run(cmd, timeout=120, env=base_env())
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    assert "Traceback" not in r.output
    assert leftover(str(tmp_path)) == []
    rec = one_record(tmp_path)
    assert rec["status"] == "complete" and rec["totals"]["num_steps"] == 30
    d = rec["mode_details"]
    assert d["roles_from"] == "mpi ranks"
    assert (d["num_ps"], d["num_workers"]) == (1, 2)
    assert len(d["cluster"]["ps"]) == 1 and len(d["cluster"]["worker"]) == 2
    # ranks 1 and 2 are the node's two workers: they split its cores; rank 0, the ps, floats
    assert [r["core_slot"] for r in rec["topology"]["ranks"]] == [[0, 2], [1, 2]]


def test_mpirun_workers_get_only_the_ps_tasks_and_themselves(tmp_path):
    """1 ps + 3 workers under mpirun: the addresses are gathered to rank 0 and scattered,
    so workers 1 and 2 get two addresses (the ps and their own) while the chief gets all
    four, and training with sparse ClusterSpecs (sync, SyncReplicasOptimizer's queues on
    the ps) still reaches its step target."""
    cmd = [
        "mpirun", "-np", "4", "--oversubscribe", "--bind-to", "none",
        sys.executable, "-m", "hvdbench", "run",
        "--mode.name=parameter_server", "--ps.num_ps=1", f"--output.dir={tmp_path}", *FAST,
    ]  # fmt: skip
    r = run(cmd, timeout=150, env=base_env())
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    assert "Traceback" not in r.output
    assert leftover(str(tmp_path)) == []
    rec = one_record(tmp_path)
    assert rec["status"] == "complete" and rec["totals"]["num_steps"] == 5
    d = rec["mode_details"]
    assert (d["num_ps"], d["num_workers"]) == (1, 3)
    assert d["cluster_complete"] and len(d["cluster"]["worker"]) == 3  # the chief's record
    assert [w["addresses_known"] for w in d["workers"]] == [4, 2, 2]


def test_mpirun_wrong_rank_count_shows_the_arithmetic(tmp_path):
    cmd = [
        "mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none",
        sys.executable, "-m", "hvdbench", "run", "--mode.name=parameter_server",
        "--ps.num_ps=1", "--np", "2", f"--output.dir={tmp_path}",
    ]  # fmt: skip
    r = run(cmd, timeout=120, env=base_env())
    assert r.returncode != 0
    assert "ps(1) + workers(2) != ranks(2)" in r.stderr
    assert leftover(str(tmp_path)) == []


def test_port_in_use_is_named(tmp_path):
    with socket.socket() as held:
        held.bind(("", 0))
        held.listen()
        port = held.getsockname()[1]
        r = hvdbench(
            "run",
            "--mode.name=parameter_server",
            "--cluster.job_name=ps",
            f"--cluster.ps_hosts=127.0.0.1:{port}",
            "--cluster.worker_hosts=127.0.0.1:1",
            f"--output.dir={tmp_path}",
            timeout=120,
        )
    assert r.returncode == 2, r.output[-2000:]
    # TensorFlow >= 2.18 logs from C++ at its import whatever TF_CPP_MIN_LOG_LEVEL says
    lines = [x for x in r.stderr.strip().splitlines() if not TF_CPP_LOG.match(x)]
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0], r.stderr


def test_sync_step_equals_single_process_step_on_the_concatenated_batch(tmp_path):
    import subprocess

    from hvdbench.modes.grpc import cluster
    from tests.conftest import _kill_group  # noqa: PLC0415

    ports = cluster.free_ports(3)
    ps_hosts = f"127.0.0.1:{ports[0]}"
    worker_hosts = f"127.0.0.1:{ports[1]},127.0.0.1:{ports[2]}"
    out = tmp_path / "weights.npz"
    helper = str(REPO / "tests" / "distributed" / "ps_step_helper.py")
    # The workers start first: they wait (bounded) for the ps to come up.
    roles = [("worker", 0), ("worker", 1), ("ps", 0)]
    procs = []
    for job, i in roles:
        if job == "ps":
            time.sleep(2)
        procs.append(
            subprocess.Popen(
                [sys.executable, helper, job, str(i), ps_hosts, worker_hosts, str(out)],
                env=base_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    try:
        outputs = [p.communicate(timeout=150)[0] for p in procs]
    finally:
        for p in procs:
            _kill_group(p.pid)
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    assert leftover(str(out)) == []

    got = np.load(out)
    n = len([k for k in got.files if k.startswith("before_")])
    before = [got[f"before_{i}"] for i in range(n)]
    after = [got[f"after_{i}"] for i in range(n)]

    import tensorflow as tf

    from hvdbench import config, models
    from hvdbench.components import training
    from hvdbench.data.synthetic import synthetic_batch

    cfg = config.load(None, ["--model.name=mnist_mlp", "--train.weight_decay=0.001"])
    model = models.build(cfg)
    model.set_weights(before)
    shape, classes = models.input_shape(cfg), models.num_classes(cfg)
    batches = [synthetic_batch(8, shape, classes, cfg.train.seed + w) for w in (0, 1)]
    images = tf.concat([b[0] for b in batches], 0)
    labels = tf.concat([b[1] for b in batches], 0)
    with tf.GradientTape() as tape:
        loss = training.loss_fn(model, images, labels, 0.001)
    grads = tape.gradient(loss, model.trainable_variables)
    expected = [w - 0.5 * g.numpy() for w, g in zip(before, grads)]
    for e, a, b in zip(expected, after, before):
        assert not np.allclose(a, b)
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


# A start-up bound that TensorFlow's import stays inside on the slowest machine (2-4 s
# there), so that the wait under test is the one that runs out.
STARTUP_BOUND = 20


def test_ps_without_a_chief_leaves_after_its_timeout(tmp_path):
    """A ps whose chief never speaks exits by itself (exit 1, one line), not never."""
    from hvdbench.modes.grpc import cluster

    ps_port, worker_port = cluster.free_ports(2)
    r = hvdbench(
        "run",
        "--mode.name=parameter_server",
        "--cluster.job_name=ps",
        f"--cluster.ps_hosts=127.0.0.1:{ps_port}",
        f"--cluster.worker_hosts=127.0.0.1:{worker_port}",
        # past TensorFlow's import on the slowest machine, so that the ps's own wait is
        # the one that runs out, not its start-up
        f"--launch.startup_timeout_s={STARTUP_BOUND}",
        f"--output.dir={tmp_path}",
        timeout=120,
    )
    assert not r.timed_out
    assert r.returncode == 1, r.output[-2000:]
    assert f"no word from the chief in {STARTUP_BOUND} s (launch.startup_timeout_s)" in r.stderr
    assert leftover(str(tmp_path)) == []


def test_worker_without_its_ps_gives_up_with_one_line(tmp_path):
    from hvdbench.modes.grpc import cluster

    ps_port, worker_port = cluster.free_ports(2)
    r = hvdbench(
        "run",
        "--mode.name=parameter_server",
        "--cluster.job_name=worker",
        f"--cluster.ps_hosts=127.0.0.1:{ps_port}",
        f"--cluster.worker_hosts=127.0.0.1:{worker_port}",
        f"--launch.startup_timeout_s={STARTUP_BOUND}",
        f"--output.dir={tmp_path}",
        timeout=120,
    )
    assert r.returncode == 1, r.output[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"hvdbench: error: a ps task at 127.0.0.1:{ps_port} not reachable after "
        f"{STARTUP_BOUND} s (launch.startup_timeout_s)"
    )
    assert "Traceback" not in r.stderr
    assert leftover(str(tmp_path)) == []
