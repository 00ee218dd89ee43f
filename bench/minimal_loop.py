"""The reference side of the harness-overhead ratio: a minimal hand-written training loop.

The same model, batch, optimizer, loss (cross-entropy plus the L2 term on the kernels, at
hvdbench's default `train.weight_decay` unless `--weight-decay` says otherwise) and thread
count as `hvdbench run --np 1`, with nothing else: a tf.function step on one synthetic
batch, timed from the first measured step to a final host sync. Prints `images/sec: X` and the process's CPU milliseconds per image.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument(
        "--weight-decay", type=float, default=None, help="L2 factor (hvdbench's default)"
    )
    a = p.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    from hvdbench import config, models
    from hvdbench.components import training

    cfg = config.load(None, [f"--model.name={a.model}"])
    model = models.build(cfg)
    shape, classes = models.input_shape(cfg), models.num_classes(cfg)
    images = tf.random.uniform((a.batch, *shape))
    labels = tf.random.uniform((a.batch,), maxval=classes, dtype=tf.int32)
    train = cfg.train
    opt = tf.keras.optimizers.SGD(train.learning_rate, momentum=train.momentum)
    decay = train.weight_decay if a.weight_decay is None else a.weight_decay
    kernels = training.decayed_variables(model)  # the variables hvdbench's L2 term covers

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
            if decay > 0:
                loss += decay * tf.add_n([tf.nn.l2_loss(v) for v in kernels])
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(a.warmup):
        step()
    float(step())
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        loss = step()
    float(loss)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"images/sec: {a.batch * a.steps / wall:.2f}")
    print(f"cpu ms/image: {1000 * cpu / (a.batch * a.steps):.3f}")


if __name__ == "__main__":
    main()
