"""One rank of a Horovod job built by hvdbench's own HorovodMode: run some steps and dump
this rank's weights after the first and the last step, for the tests to compare.

    horovodrun -np 2 -H localhost:2 --gloo python hvd_steps.py OUT STEPS [--section.key=v ...]
    python hvd_steps.py OUT 1 --reference [--section.key=v ...]     (single process, no Horovod)

--reference takes one plain TensorFlow step (no Horovod) on the concatenation of the
batches that ranks 0..--ranks-1 would see, from the same initial weights.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from hvdbench import config, models
from hvdbench.components import runtime, training
from hvdbench.data.synthetic import synthetic_batch
from hvdbench.launch import topology


def dump(out: str, name: str, variables) -> None:
    np.savez(os.path.join(out, name), *[v.numpy() for v in variables])


def reference(cfg: config.Config, out: str, ranks: int) -> None:
    import tensorflow as tf

    training.set_precision_policy(cfg)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    model = models.build(cfg)
    opt = training.make_optimizer(cfg.train)
    shape, classes = models.input_shape(cfg), models.num_classes(cfg)
    batches = [
        synthetic_batch(cfg.train.per_device_batch_size, shape, classes, cfg.train.seed + r)
        for r in range(ranks)
    ]
    images = tf.concat([b[0] for b in batches], 0)
    labels = tf.concat([b[1] for b in batches], 0)
    with tf.GradientTape() as tape:
        loss = training.loss_fn(model, images, labels, cfg.train.weight_decay)
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    dump(out, "reference.npz", model.variables)


def main(argv: list[str]) -> int:
    out, steps, *rest = argv
    rest, overrides = config.split_overrides(rest)
    cfg = config.load(None, overrides)
    if "--reference" in rest:
        reference(cfg, out, int(rest[rest.index("--ranks") + 1]) if "--ranks" in rest else 2)
        return 0
    from hvdbench.modes.horovod import HorovodMode

    topo = topology.detect(os.environ)
    cores = runtime.bind_cores(cfg, topo)
    runtime.configure_tensorflow(cfg, topo, cores)
    mode = HorovodMode(cfg, topo)
    mode.setup()
    mode.build()
    mode.initialize()
    rank = mode.worker_index
    dump(out, f"initial-rank{rank}.npz", mode.model.variables)
    losses = []
    for step in range(1, int(steps) + 1):
        losses.append(mode.step())
        if step == 1:
            dump(out, f"step1-rank{rank}.npz", mode.model.variables)
    dump(out, f"final-rank{rank}.npz", mode.model.variables)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "rank": rank,
                "size": mode.num_workers,
                "losses": losses,
                "cpus": cores,
                "source": topo.source,
            },
            f,
        )
    mode.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
