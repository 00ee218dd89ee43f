"""What the ``tf.compat.v1`` graph modes share: their optimizers and their input.

``SyncReplicasOptimizer`` wraps ``tf.compat.v1.train`` optimizers only, so the gRPC graph
modes use those, with every hyperparameter taken from the config as in the Keras modes
(the loss, L2 term included, is :func:`hvdbench.training.loss_fn` in every mode).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from hvdbench.config import Config, TrainConfig

v1 = tf.compat.v1


def make_v1_optimizer(train: TrainConfig) -> Any:
    """The configured ``tf.compat.v1.train`` optimizer."""
    lr = train.learning_rate
    if train.optimizer == "sgd":
        return v1.train.GradientDescentOptimizer(lr)
    if train.optimizer == "momentum":
        return v1.train.MomentumOptimizer(lr, momentum=train.momentum)
    if train.optimizer == "rmsprop":
        return v1.train.RMSPropOptimizer(
            lr, decay=train.rho, momentum=train.momentum, epsilon=train.epsilon
        )
    if train.optimizer == "adam":
        return v1.train.AdamOptimizer(
            lr, beta1=train.beta_1, beta2=train.beta_2, epsilon=train.epsilon
        )
    raise ValueError(f"unknown optimizer {train.optimizer!r}")  # validated by the config


def synthetic_arrays(cfg: Config, worker_index: int) -> tuple[np.ndarray, np.ndarray]:
    """This worker's synthetic batch as arrays, drawn eagerly (before any graph is built)
    exactly as the eager modes draw it: ``synthetic_batch(..., seed + worker_index)``."""
    from hvdbench import models
    from hvdbench.data.synthetic import synthetic_batch

    images, labels = synthetic_batch(
        cfg.train.per_device_batch_size,
        models.input_shape(cfg),
        models.num_classes(cfg),
        cfg.train.seed + worker_index,
    )
    return images.numpy(), labels.numpy()


def clip_pairs(grads_and_vars: list[tuple[Any, Any]], norm: float) -> list[tuple[Any, Any]]:
    if norm <= 0:
        return grads_and_vars
    grads, _ = tf.clip_by_global_norm([g for g, _ in grads_and_vars], norm)
    return list(zip(grads, [v for _, v in grads_and_vars]))
