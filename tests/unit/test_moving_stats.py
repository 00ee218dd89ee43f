"""A packed step's small transfers: batch norm's moving averages, the local step, the reads.

The step graphs are the modes' own (``build()`` on a worker of an explicit cluster, no
servers). A tensor that crosses from one task to another is one gRPC transfer per
receiving task, so the assertions count those over the ops a step runs. The values of the
deferred updates are checked against Keras's own in one session."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1


def _device(op) -> str:
    """Where the placer puts ``op``: its device, else its resource's (a variable's reads
    and updates go where the variable is), else its colocation group's."""
    if op.device:
        return op.device
    for x in op.inputs:
        if x.dtype == tf.resource and x.op is not op:
            return _device(x.op)
    for group in op.colocation_groups():
        name = group.decode()[len("loc:@") :]
        if name != op.name:
            return _device(op.graph.get_operation_by_name(name))
    return ""


def _job(op) -> str:
    return tf.DeviceSpec.from_string(_device(op)).job or "worker"  # unplaced: the worker's


def _closure(*fetches) -> set:
    """The ops a step running ``fetches`` runs."""
    ops = [f if isinstance(f, tf.Operation) else f.op for f in tf.nest.flatten(fetches)]
    seen: dict = {}
    while ops:
        op = ops.pop()
        if op.name not in seen:
            seen[op.name] = op
            ops += [x.op for x in op.inputs] + list(op.control_inputs)
    return set(seen.values())


def _step_crossings(fetches) -> dict[tuple[str, str], int]:
    """{(from job, to job): tensors and control edges crossing} in the ops that a step
    running ``fetches`` runs, each counted once per receiving job."""
    crossing: set[tuple[str, str, str]] = set()
    for op in _closure(fetches):
        sources = [(x.name, x.op) for x in op.inputs] + [(c.name, c) for c in op.control_inputs]
        for src_name, src in sources:
            if _job(src) != _job(op):
                crossing.add((_job(src), _job(op), src_name))
    out: dict[tuple[str, str], int] = {}
    for a, b, _ in crossing:
        out[(a, b)] = out.get((a, b), 0) + 1
    return out


def _built_mode(variant: list[str], num_ps: int = 2):
    """Worker 0's mode object after ``build()``, for resnet20 on ``num_ps`` ps tasks."""
    from hvdbench import config
    from hvdbench.launch.job import Role
    from hvdbench.launch.topology import Topology
    from hvdbench.modes import registry
    from hvdbench.modes.grpc import cluster
    from hvdbench.modes.grpc.cluster import TaskView
    from hvdbench.modes.grpc.runtime import Membership

    ps = ",".join(f"localhost:{3000 + i}" for i in range(num_ps))
    cfg = config.load(
        None,
        [
            "--model.name=resnet20",
            "--train.per_device_batch_size=2",
            f"--ps.num_ps={num_ps}",
            f"--cluster.ps_hosts={ps}",
            "--cluster.worker_hosts=localhost:4000,localhost:4001",
            "--cluster.job_name=worker",
            *variant,
        ],
    )
    mode = registry.get(cfg.mode.name)(cfg, Topology(0, 1, 0, 1, "single", "node1"))
    spec = TaskView.whole(cluster.explicit_spec(cfg))
    mode.membership = Membership(spec, Role("worker", 0), False)
    mode.build()
    return mode


VARIANTS = {
    "ps-sync": ["--mode.name=parameter_server", "--ps.sync=true"],
    "ps-async-staged": ["--mode.name=parameter_server", "--ps.sync=false", "--ps.staged_vars=true"],
    "distributed_replicated": ["--mode.name=distributed_replicated"],
}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_a_packed_step_crosses_a_few_times_per_ps_task(variant):
    """Unpacked, a resnet20 step crosses between the jobs hundreds of times (a read per
    variable, a gradient per variable, a local step per accumulator, batch norm's moments,
    momenta and control edges); packed, a few times per ps task, whatever the mode."""
    counts = {}
    for pack in (False, True):
        mode = _built_mode([*VARIANTS[variant], f"--ps.pack_transfers={str(pack).lower()}"])
        with mode.graph.as_default():
            counts[pack] = _step_crossings(mode.fetches)
    unpacked, packed = (sum(counts[p].values()) for p in (False, True))
    assert unpacked > 200, counts[False]  # measured: 242 to 324
    # At most 6 per ps task: the gradients, batch norm's moments, the values, the local
    # step, the optimizer's two constants (async), the sync token and the global step,
    # not all in every mode (measured: 9 to 12 for both tasks).
    assert packed <= 6 * 2, counts[True]


def _gradient_splits(mode) -> list:
    """The ops on the ps tasks that first take each task's packed gradients from the
    worker: the split (async), or the accumulation of the whole (sync), less batch norm's
    moments (what the updates are made of)."""
    with mode.graph.as_default():
        ops = _closure(mode.fetches)
        moments = _closure(*mode._statistics_updates)
    return [
        op
        for op in ops - moments
        if op.type in ("SplitV", "ResourceAccumulatorApplyGradient")
        and _job(op) == "ps"
        and any(_job(x.op) == "worker" for x in op.inputs)
    ]


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_the_gradients_wait_for_no_statistics_update(variant):
    """Batch norm's updates run with the step; nothing waits for them. When the
    gradients waited, the moments had to reach the ps and a control edge come back
    before the gradients could go: a round trip more in the tail of every step."""
    mode = _built_mode([*VARIANTS[variant], "--ps.pack_transfers=true"])
    splits = _gradient_splits(mode)
    assert len(splits) == 2  # one per ps task
    updates = set(mode._statistics_updates)
    assert len(updates) == 2
    assert not updates & _closure(*splits)
    with mode.graph.as_default():
        assert updates <= _closure(mode.fetches)  # they still run every step


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_staged_values_are_read_at_the_start_and_updated_after(sync):
    """Staged and packed, each ps task reads the next step's values waiting for nothing
    of the worker's (so the read runs while the worker computes, not after its last op),
    and the task's gradients are applied (sync: accumulated) only after that read,
    ordered on the task."""
    mode = _built_mode(
        ["--mode.name=parameter_server", f"--ps.sync={str(sync).lower()}"]
        + ["--ps.staged_vars=true", "--ps.pack_transfers=true"]
    )
    reads = mode.staging.read_before
    assert len(reads) == 2 and {_device(r) for r in reads} == {
        "/job:ps/task:0",
        "/job:ps/task:1",
    }
    for r in reads:
        assert {_job(op) for op in _closure(r)} == {"ps"}
    with mode.graph.as_default():
        assert set(reads) <= _closure(mode.fetches)
    for split in _gradient_splits(mode):
        waits = [r for r in reads if r in _closure(split)]
        assert [_device(r) for r in waits] == [_device(split)]


def test_a_local_copy_reads_its_own_statistics_and_updates_the_ps_ones():
    """Packed, the local copy has statistics of its own (its forward pass reads none from
    the ps) and every update goes to a ps variable, one op per ps task."""
    mode = _built_mode([*VARIANTS["distributed_replicated"], "--ps.pack_transfers=true"])
    local_stats = mode.copy.local_model.non_trainable_variables
    assert len(local_stats) == 42 and all("job:worker" in v.device for v in local_stats)
    updates = mode._statistics_updates
    assert len(updates) == 2 and all("job:ps" in _device(u) for u in updates)
    updated = {
        x.op.name
        for u in updates
        for c in u.control_inputs
        for x in c.inputs
        if x.dtype == tf.resource
    }
    ps_stats = [v for v in mode.graph.get_collection("variables") if "moving_" in v.name]
    assert len(ps_stats) == 42 and all("job:ps" in v.device for v in ps_stats)
    assert updated == {v.handle.op.name for v in ps_stats}


@pytest.mark.parametrize("renorm", [False, True])
def test_deferred_updates_match_keras_own(renorm):
    """One training step's moving mean and variance, updated by the deferred updates (on
    another model's statistics, as a local copy does) and by Keras's own: the same. Batch
    renormalisation uses what the update returns, so it is left to Keras (not deferred)."""
    from hvdbench.modes.grpc import graph_training as gt
    from hvdbench.modes.grpc import moving_stats

    x = np.random.default_rng(0).standard_normal((8, 6, 6, 3)).astype(np.float32) * 3 + 1

    def model():
        layers = tf.keras.layers
        bn = layers.BatchNormalization(momentum=0.7, renorm=renorm)
        return tf.keras.Sequential([tf.keras.Input((6, 6, 3)), layers.Conv2D(4, 3), bn])

    with tf.Graph().as_default() as g:
        own, target, local = model(), model(), model()
        first = len(g.get_operations())
        own_out = own(x, training=True)
        own_updates = gt.moving_average_updates(g, first)
        with moving_stats.deferred(local) as pending:
            local_out = local(x, training=True)
        if renorm:
            assert pending == []
            return
        assert len(pending) == 2  # the mean and the variance of the one batch norm
        assert len(gt.moving_average_updates(g, first)) == len(own_updates)  # none built
        deferred = moving_stats.build_updates(pending, moving_stats.statistics_map(local, target))
        assert len(deferred) == 1  # one task, one dtype
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            kernel = sess.run(own.layers[0].kernel)
            sess.run(local.layers[0].kernel.assign(kernel))
            before = sess.run(local.layers[1].non_trainable_variables)
            sess.run([own_out, local_out, own_updates, deferred])
            want = sess.run(own.layers[1].non_trainable_variables)
            got = sess.run(target.layers[1].non_trainable_variables)
            untouched = sess.run(local.layers[1].non_trainable_variables)
    assert not np.allclose(want[0], before[0])  # the step moved the mean
    for w, v in zip(want, got):
        np.testing.assert_allclose(v, w, rtol=1e-6)
    for b, u in zip(before, untouched):
        np.testing.assert_array_equal(u, b)
    assert moving_stats.METHOD not in vars(local.layers[1])  # the layer's own method is back


def test_one_local_step_read_gives_every_accumulator_the_same_tensor():
    from hvdbench.modes.grpc import packing

    with tf.Graph().as_default():
        with packing.one_local_step_read():
            step = v1.Variable(0, name=packing.LOCAL_STEP, trainable=False, use_resource=True)
            other = v1.Variable(0, name="other", use_resource=True)
        a, b = tf.convert_to_tensor(step), tf.convert_to_tensor(step)
        c, d = tf.convert_to_tensor(other), tf.convert_to_tensor(other)
        assert a is b and c is not d
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(step.assign(3))
            assert sess.run(a) == 3
