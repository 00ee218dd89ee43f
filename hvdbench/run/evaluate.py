"""`hvdbench eval`: restore the latest checkpoint and measure accuracy on the eval split.

As tf_cnn_benchmarks' eval mode: one process runs the model in inference mode over the
evaluation split (CIFAR-10 ``test_batch.bin``, MNIST ``t10k-*``, ImageNet ``validation-*``)
and reports top-1 accuracy and top-5 recall (``in_top_k``), printed as
``Accuracy @ 1 = X Accuracy @ 5 = Y [N examples]``. Only the ``model`` object of the
checkpoint is read, so a checkpoint written by any mode evaluates the same way. The result
goes to a JSON record and to TensorBoard (``eval/top_1_accuracy``, ``eval/top_5_accuracy``
at the checkpoint's global step).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from hvdbench import models, tfcompat
from hvdbench.components import checkpoint, record, runtime
from hvdbench.config import Config
from hvdbench.data import describe, make_dataset, make_synthetic_input, read_errors
from hvdbench.errors import UsageError
from hvdbench.launch.topology import Topology

SYNTHETIC_EVAL_BATCHES = 10


def eval_logdir(cfg: Config) -> str:
    """TensorBoard directory of the evaluation: ``<summary.dir or checkpoint.dir>/eval``."""
    return os.path.join(cfg.summary.dir or cfg.checkpoint.dir, "eval")


def evaluate(cfg: Config, topo: Topology, argv: list[str]) -> int:
    if not cfg.checkpoint.dir:
        raise UsageError("checkpoint.dir: hvdbench eval needs the directory of the checkpoints")

    if not checkpoint.candidates(cfg.checkpoint.dir):
        raise UsageError(
            f"checkpoint.dir: no checkpoint (ckpt-N.index) in {cfg.checkpoint.dir!r}; "
            "train with --checkpoint.dir first"
        )
    if topo.launched and topo.size > 1:
        raise UsageError(
            f"hvdbench eval runs in one process, not {topo.size}: start it without a launcher"
        )
    cores = runtime.bind_cores(cfg, topo)
    runtime.allocator_environment(cfg, os.environ)
    runtime.configure_tensorflow(cfg, topo, cores)
    import tensorflow as tf

    from hvdbench.components import training

    training.set_precision_policy(cfg)
    model = models.build(cfg)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    ckpt = tf.train.Checkpoint(model=model, global_step=step)
    prefix = checkpoint.restore_latest(ckpt, cfg.checkpoint.dir)
    if prefix is None:
        raise UsageError(f"checkpoint.dir: no checkpoint in {cfg.checkpoint.dir!r} can be read")
    global_step = int(step.numpy())
    classes = models.num_classes(cfg)
    k = min(5, classes)

    if cfg.data.source == "synthetic":
        batch = make_synthetic_input(cfg, models.input_shape(cfg), classes, 0)()
        count = cfg.eval.num_batches or SYNTHETIC_EVAL_BATCHES
        batches: Any = (batch for _ in range(count))
    else:
        ds = make_dataset(cfg, models.input_shape(cfg), training=False)
        batches = ds.take(cfg.eval.num_batches) if cfg.eval.num_batches else ds

    @tf.function
    def score(images: Any, labels: Any) -> tuple[Any, Any]:
        logits = tf.cast(model(images, training=False), tf.float32)
        top1 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.int64))
        topk = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.int64))
        return top1, topk

    correct1 = correctk = examples = 0
    start = time.perf_counter()
    with read_errors(cfg):
        for images, labels in batches:
            c1, ck = score(images, labels)
            correct1 += int(c1)
            correctk += int(ck)
            examples += int(labels.shape[0])
    seconds = time.perf_counter() - start
    if examples == 0:
        raise UsageError(f"data.dir: the evaluation split of {cfg.data.dir!r} is empty")
    top1, top5 = correct1 / examples, correctk / examples
    print(f"Restored {prefix} (global step {global_step})", flush=True)
    print(f"Accuracy @ 1 = {top1:.4f} Accuracy @ {k} = {top5:.4f} [{examples} examples]")

    logdir = eval_logdir(cfg)
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default(step=global_step):
        tf.summary.scalar("eval/top_1_accuracy", top1)
        tf.summary.scalar("eval/top_5_accuracy", top5)
    writer.flush()

    data = {
        "schema_version": record.RECORD_SCHEMA_VERSION,
        "kind": "eval",
        "status": "complete",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": cfg.model.name,
        "config": cfg.to_dict(),
        "command_line": [sys.executable, "-m", "hvdbench", *argv],
        "git_sha": record.git_sha(),
        "checkpoint": prefix,
        "global_step": global_step,
        "data": describe(cfg, training=False),
        "eval": {
            "top_1_accuracy": top1,
            "top_5_accuracy": top5,
            "top_k": k,
            "num_examples": examples,
            "seconds": seconds,
            "images_per_sec": examples / seconds if seconds > 0 else 0.0,
        },
        "summary_dir": logdir,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": tfcompat.keras_info(),
            "python": record.python_version(),
        },
    }
    name = record.record_name("eval", cfg.model.name, 1)
    path = record.write_atomic(Path(cfg.output.dir) / name, data)
    print(f"hvdbench: record written to {path}", flush=True)
    return 0
