"""Greedy byte-size placement of variables on ps tasks."""

from __future__ import annotations

from hvdbench.modes.grpc import placement


def test_greedy_least_loaded_first_lowest_index_on_ties():
    assert placement.assign_greedy([10, 10, 5, 5, 20], 2) == [0, 1, 0, 1, 0]
    assert placement.assign_greedy([7], 3) == [0]


def test_num_bytes_from_shape_and_dtype():
    assert placement.num_bytes([3, 3, 16, 32], 1) == 3 * 3 * 16 * 32 * 4  # float32
    assert placement.num_bytes([], 9) == 8  # int64 scalar (global step)
    assert placement.num_bytes([10], 19) == 20  # half
    assert placement.num_bytes([10], 101) == 40  # float32_ref


def test_one_dominant_tensor_cannot_be_split():
    sizes = [784 * 100 * 4, 100 * 4, 100 * 10 * 4, 10 * 4]  # mnist_mlp
    tasks = placement.assign_greedy(sizes, 2)
    loads = placement.loads_by_task(sizes, tasks, 2)
    assert max(loads) / sum(loads) > 0.9


def test_resnet20_splits_across_two_ps_by_bytes():
    """The real strategy inside replica_device_setter on resnet20's graph (no servers)."""
    import tensorflow as tf

    from hvdbench import config, models

    cfg = config.load(None, ["--model.name=resnet20"])
    strategy = placement.GreedyByteSize(2)
    with tf.Graph().as_default():
        setter = tf.compat.v1.train.replica_device_setter(
            ps_tasks=2, worker_device="/job:worker/task:0", ps_strategy=strategy
        )
        with tf.compat.v1.device(setter):
            model = models.build(cfg)
        devices = {v.name.split(":")[0]: v.device for v in model.variables}
    loads = strategy.loads
    assert sum(loads) == sum(placement.num_bytes(v.shape, 1) for v in model.variables)
    assert max(loads) / sum(loads) <= 0.6, loads
    assert {d for d in devices.values()} == {"/job:ps/task:0", "/job:ps/task:1"}
    # The device each variable got is the task the strategy chose for it.
    for name, size, task in strategy.placed:
        assert devices[name] == f"/job:ps/task:{task}"
        assert size > 0
