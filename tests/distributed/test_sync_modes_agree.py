"""Synchronous modes agree: from the same initial weights and the same batches, a few SGD
steps of horovod, synchronous parameter_server, distributed_replicated,
collective_all_reduce and replicated reach the same weights.

The initial weights are one checkpoint that every mode resumes from (each mode's own
initialisers would draw different values: the graph modes' op seeds are not the eager
ones). The batches are the same because every mode gives worker (or device) i shard i of
two and the digits are read unshuffled. Each run saves a checkpoint at every global
step; the weights are compared at the last global step every mode saved.

The ps modes' SyncReplicasOptimizer counts gradients, not workers. With TensorFlow's
default initial tokens a worker's second gradient was computed on the initial weights and
dropped as stale, which this test found (the weights of one-worker parameter_server were
those of SGD with the second batch left out); hvdbench now starts with no token, so each
global step applies one gradient from each worker: both workers wait for the token of a
step after pushing their gradients, so neither can take the other's.

Tolerance: 1e-5 absolute on weights of magnitude ~0.1. The modes sum the two gradients
in different orders and places (ring all-reduce, a ps accumulator, a mirrored
all-reduce), so float32 rounding differs by a few ulps per step (~1e-8 relative);
over 4 steps at learning rate 0.1 that stays below 1e-6. A mode that dropped, repeated or
mis-scaled one worker's gradient, or trained on other batches, differs by ~1e-2.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests import digits
from tests.conftest import hvdbench
from tests.modes import bounded, two_ranks_each

pytestmark = pytest.mark.distributed

TOLERANCE = 1e-5
STEPS = 4
COMMON = [
    "--model.name=mnist_mlp",
    "--data.source=mnist",
    "--data.shuffle_buffer=0",
    "--train.optimizer=sgd",
    "--train.learning_rate=0.1",
    "--train.weight_decay=0",
    "--train.per_device_batch_size=16",
    "--train.num_warmup_steps=0",
    f"--train.num_steps={STEPS}",
    "--checkpoint.every_steps=1",
    f"--checkpoint.max_to_keep={STEPS + 2}",
]
MODES = two_ranks_each(
    "horovod", "parameter_server", "distributed_replicated", "collective_all_reduce", "replicated"
)
MODES["parameter_server"].append("--ps.sync=true")
for _mode, _flags in MODES.items():
    _flags.extend(bounded(_mode))


def initial_checkpoint(directory: Path) -> None:
    """A step-0 checkpoint every mode can resume from: the model, and an (empty) optimizer
    state under both the eager modes' key and the graph modes' key."""
    import tensorflow as tf

    from hvdbench import config, models
    from hvdbench.components import training

    # the optimizer as the runs configure it (a resumed run sets train.learning_rate
    # again over the one this checkpoint holds; the same value keeps that out of the test)
    cfg = config.load(None, [a for a in COMMON if a.startswith(("--model.", "--train."))])
    tf.keras.utils.set_random_seed(99)
    model = models.build(cfg)
    opt = training.make_optimizer(cfg.train)
    training.build_optimizer_state(opt, model.trainable_variables)
    slots = tf.Module()
    slots.slot_variables = []
    ckpt = tf.train.Checkpoint(
        global_step=tf.Variable(0, dtype=tf.int64),
        model=model,
        optimizer=opt,
        graph_optimizer=slots,
    )
    tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=1, checkpoint_name="ckpt").save(0)


def weights_at(directory: Path, step: int) -> list[np.ndarray]:
    import tensorflow as tf

    from hvdbench import config, models

    model = models.build(config.load(None, ["--model.name=mnist_mlp"]))
    tf.train.Checkpoint(model=model).read(str(directory / f"ckpt-{step}")).expect_partial()
    return [v.numpy() for v in model.trainable_variables]


def saved_steps(directory: Path) -> set[int]:
    return {int(p.name[len("ckpt-") : -len(".index")]) for p in directory.glob("ckpt-*.index")}


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("agree")
    initial_checkpoint(root / "init")
    return digits.write_digits(root / "digits"), root / "init"


def test_synchronous_modes_reach_the_same_weights(tmp_path, start):
    data, init = start
    dirs = {}
    for mode, args in MODES.items():
        ckpt = tmp_path / f"ckpt-{mode}"
        shutil.copytree(init, ckpt)
        r = hvdbench(
            "run",
            *args,
            *COMMON,
            f"--data.dir={data}",
            f"--checkpoint.dir={ckpt}",
            f"--output.dir={tmp_path / 'out' / mode}",
            timeout=240,
        )
        assert not r.timed_out and r.returncode == 0, f"{mode}: {r.output[-3000:]}"
        assert "ckpt-0" in r.stdout, f"{mode} did not resume from the initial weights"
        dirs[mode] = ckpt
    common = set.intersection(*(saved_steps(d) for d in dirs.values())) - {0}
    assert common and max(common) >= 2, {m: sorted(saved_steps(d)) for m, d in dirs.items()}
    step = max(common)
    first = next(iter(dirs))
    reference = weights_at(dirs[first], step)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(reference, weights_at(init, 0)))
    assert moved > 100 * TOLERANCE  # the weights did move
    diffs = {}
    for mode, d in dirs.items():
        w = weights_at(d, step)
        diffs[mode] = max(float(np.abs(a - b).max()) for a, b in zip(w, reference))
    print(f"largest weight difference from {first} at global step {step}: {diffs}")
    assert max(diffs.values()) <= TOLERANCE, diffs
