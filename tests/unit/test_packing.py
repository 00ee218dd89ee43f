"""ps.pack_transfers: a worker's gradients and reads cross to each ps task as one tensor.

Built on real resnet20 graphs placed by the modes' own device setter (no servers): the
assertions count the tensors that cross between jobs, which is what becomes one gRPC
transfer each, and run the packed tensors to see the same values arrive."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1

WORKER = "/job:worker/task:0"


def _job(device: str) -> str:
    return tf.DeviceSpec.from_string(device).job or ""


def _crossings(graph, src: str, dst: str) -> int:
    """Edges of ``graph`` from an op on job ``src`` to an op on job ``dst``."""
    return sum(
        1
        for op in graph.get_operations()
        if _job(op.device) == dst
        for x in op.inputs
        if _job(x.op.device) == src
    )


def _resnet20_on_two_ps():
    from hvdbench import config, models
    from hvdbench.modes.grpc import placement

    cfg = config.load(None, ["--model.name=resnet20", "--mode.name=parameter_server"])
    setter = v1.train.replica_device_setter(
        ps_tasks=2, worker_device=WORKER, ps_strategy=placement.GreedyByteSize(2)
    )
    with v1.device(setter):
        model = models.build(cfg)
    return model


@pytest.mark.parametrize("packed", [False, True])
def test_gradients_cross_once_per_ps_task(packed):
    from hvdbench.modes.grpc import packing

    with tf.Graph().as_default() as g:
        model = _resnet20_on_two_ps()
        with v1.device(WORKER):
            loss = tf.reduce_sum(model(tf.zeros([2, 32, 32, 3]), training=True))
            pairs = list(
                zip(tf.gradients(loss, model.trainable_variables), model.trainable_variables)
            )
            before = _crossings(g, "worker", "ps")  # batch norm's moving averages
            if packed:
                pairs = packing.gradients_to_ps(pairs)
        for grad, var in pairs:  # what apply_gradients does with them: on the variable's task
            with v1.device(var.device):
                tf.identity(grad)
        assert len(pairs) == 65
        assert _crossings(g, "worker", "ps") - before == (2 if packed else 65)


@pytest.mark.parametrize("packed", [False, True])
def test_reads_cross_once_per_ps_task(packed):
    from hvdbench.modes.grpc.graph_training import read_values

    with tf.Graph().as_default() as g:
        model = _resnet20_on_two_ps()
        before = _crossings(g, "ps", "worker")
        with v1.device(WORKER):
            values = read_values(model.trainable_variables, WORKER, packed)
        assert [v.shape for v in values] == [v.shape for v in model.trainable_variables]
        assert all(_job(v.device) == "worker" for v in values)
        assert _crossings(g, "ps", "worker") - before == (2 if packed else 65)


def test_packed_values_arrive_unchanged():
    """Mixed shapes (a scalar, vectors, a 4-d kernel) and dtypes on two devices, run."""
    from hvdbench.modes.grpc import packing

    rng = np.random.default_rng(0)
    shapes = [(), (3,), (2, 2, 3, 4), (5,)]
    dtypes = [tf.float32, tf.float32, tf.float32, tf.float64]
    with tf.Graph().as_default():
        variables = [
            v1.Variable(rng.standard_normal(s), dtype=d, use_resource=True)
            for s, d in zip(shapes, dtypes)
        ]
        grads = [tf.constant(rng.standard_normal(s), dtype=d) for s, d in zip(shapes, dtypes)]
        sparse = tf.IndexedSlices(tf.ones([1, 3]), tf.constant([0]), tf.constant([3, 3]))
        sparse_var = v1.Variable(np.zeros((3, 3)), dtype=tf.float32, use_resource=True)
        pairs = [*zip(grads, variables), (None, variables[0]), (sparse, sparse_var)]
        moved = packing.gradients_to_ps(pairs)
        read = packing.read_from_ps(variables, "/device:CPU:0")
        assert moved[-2][0] is None and moved[-1][0] is sparse  # passed through as they were
        assert [v for _, v in moved] == [v for _, v in pairs]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            got_g, want_g = sess.run([[g for g, _ in moved[:4]], grads])
            got_v, want_v = sess.run([read, [v.read_value() for v in variables]])
    for got, want, s in zip(got_g + got_v, want_g + want_v, shapes + shapes):
        assert np.shape(got) == s
        np.testing.assert_array_equal(got, want)


def test_one_accumulator_per_ps_task_gives_the_same_synchronous_update():
    """Packed, ``SyncReplicasOptimizer`` accumulates each ps task's share of the gradients
    whole (one accumulator, one flat gradient) and :class:`SplitApply` splits the average
    back: two replicas' gradients give the variables what momentum SGD gives the mean of
    the two, the unpacked optimizer's update."""
    from hvdbench.modes.grpc import packing

    rng = np.random.default_rng(1)
    shapes = [(3,), (2, 2, 3, 4), (), (5, 2)]
    inits = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(2)]
    sparse_grad = np.ones((1, 3), np.float32)
    results = {}
    for packed in (False, True):
        with tf.Graph().as_default():
            variables = [v1.Variable(x, use_resource=True) for x in inits]
            sparse_var = v1.Variable(np.zeros((3, 3), np.float32), use_resource=True)
            step = v1.train.get_or_create_global_step()
            feeds = [v1.placeholder(tf.float32, s) for s in shapes]
            inner = v1.train.MomentumOptimizer(0.1, 0.9)
            opt = v1.train.SyncReplicasOptimizer(
                packing.SplitApply(inner) if packed else inner, replicas_to_aggregate=2
            )
            sparse = tf.IndexedSlices(tf.constant(sparse_grad), tf.constant([1]), [3, 3])
            pairs = [*zip(feeds, variables), (sparse, sparse_var)]
            if packed:
                pairs = packing.gradients_to_accumulators(pairs)
                assert [type(v).__name__ for _, v in pairs] == [
                    "ResourceVariable",
                    "PackedGradient",
                ]
            train = opt.apply_gradients(pairs, global_step=step)
            accumulators = [
                op
                for op in tf.compat.v1.get_default_graph().get_operations()
                if op.type.endswith("ConditionalAccumulator")  # dense, sparse, resource
            ]
            assert len(accumulators) == (2 if packed else 5)  # the sparse one, and one or 4 dense
            sync_op = opt.get_chief_queue_runner().enqueue_ops[0]
            with v1.Session() as sess:
                sess.run([v1.global_variables_initializer(), v1.local_variables_initializer()])
                sess.run(opt.chief_init_op)
                sess.run(opt._sync_token_queue.enqueue_many(([0, 0],)))
                for replica in grads:  # two replicas' gradients for global step 0
                    sess.run(train, dict(zip(feeds, replica)))
                sess.run(sync_op)
                results[packed] = sess.run([*variables, sparse_var, step])
    mean = [(a + b) / 2 for a, b in zip(*grads)]
    for got, x, g in zip(results[True], inits, mean):
        np.testing.assert_allclose(got, x - 0.1 * g, rtol=1e-6)  # the first step's momentum
    for got, want in zip(results[True], results[False]):
        np.testing.assert_array_equal(got, want)
    assert results[True][-1] == 1


def test_bdp_probe_off_adds_the_channel_argument_and_keeps_the_users():
    """ps.grpc_bdp_probe=false reaches TensorFlow's channels as grpc.http2.bdp_probe=0;
    whatever the user put in TF_GRPC_DEFAULT_OPTIONS stays, and their own bdp_probe wins."""
    from hvdbench import config
    from hvdbench.modes.grpc.runtime import apply_channel_options, channel_options

    assert channel_options(None, False) == "grpc.http2.bdp_probe=0"
    assert channel_options("grpc.keepalive_time_ms=1000", False) == (
        "grpc.keepalive_time_ms=1000,grpc.http2.bdp_probe=0"
    )
    assert channel_options("grpc.http2.bdp_probe=1", False) == "grpc.http2.bdp_probe=1"
    assert channel_options(None, True) is None
    assert channel_options("a=1", True) == "a=1"
    env: dict[str, str] = {}
    assert (
        apply_channel_options(
            config.load(None, ["--mode.name=parameter_server", "--ps.grpc_bdp_probe=false"]), env
        )
        == "grpc.http2.bdp_probe=0"
    )
    assert env == {"TF_GRPC_DEFAULT_OPTIONS": "grpc.http2.bdp_probe=0"}
    env = {}
    assert (
        apply_channel_options(
            config.load(None, ["--mode.name=parameter_server", "--ps.grpc_bdp_probe=true"]), env
        )
        is None
    )
    assert env == {}
