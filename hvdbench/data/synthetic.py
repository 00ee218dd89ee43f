"""Synthetic data: one random batch per rank, generated once on the device and reused.

The benchmark then measures training alone, as tf_cnn_benchmarks' synthetic mode does.
Each rank draws from ``seed + rank``, so ranks see different examples (which the
correctness tests rely on) and a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from hvdbench.config import Config


def synthetic_batch(
    batch_size: int, shape: tuple[int, int, int], classes: int, seed: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """A reproducible batch: uniform [0, 1) images and uniform integer labels."""
    gen = tf.random.Generator.from_seed(seed)
    images = gen.uniform((batch_size, *shape), dtype=tf.float32)
    labels = gen.uniform((batch_size,), maxval=classes, dtype=tf.int32)
    return tf.identity(images), tf.identity(labels)


def synthetic_input(
    cfg: Config, shape: tuple[int, int, int], classes: int, rank: int
) -> Callable[[], tuple[tf.Tensor, tf.Tensor]]:
    batch = synthetic_batch(cfg.train.per_device_batch_size, shape, classes, cfg.train.seed + rank)
    return lambda: batch
