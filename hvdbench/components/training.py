"""The optimisation problem shared by the TensorFlow 2 modes: optimizer, loss, precision.

Every mode trains the same thing: softmax cross-entropy on the model's logits, plus an
explicit L2 term ``weight_decay * sum(w^2)/2`` over the kernels (not biases or batch-norm
parameters), with every optimizer hyperparameter taken from the config, because Keras'
and ``tf.compat.v1``'s defaults differ.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvdbench.config import Config, TrainConfig


def set_precision_policy(cfg: Config) -> str:
    """Apply the Keras mixed-precision policy before the model is built; return its name."""
    policy = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[
        cfg.train.mixed_precision
    ]
    tf.keras.mixed_precision.set_global_policy(policy)
    return policy


def make_optimizer(train: TrainConfig) -> Any:
    """The configured Keras optimizer, wrapped for loss scaling under float16."""
    lr = train.learning_rate
    opt: Any
    if train.optimizer == "sgd":
        opt = tf.keras.optimizers.SGD(lr, momentum=0.0)
    elif train.optimizer == "momentum":
        opt = tf.keras.optimizers.SGD(lr, momentum=train.momentum)
    elif train.optimizer == "rmsprop":
        opt = tf.keras.optimizers.RMSprop(
            lr, rho=train.rho, momentum=train.momentum, epsilon=train.epsilon
        )
    elif train.optimizer == "adam":
        opt = tf.keras.optimizers.Adam(
            lr, beta_1=train.beta_1, beta_2=train.beta_2, epsilon=train.epsilon
        )
    else:  # validated by the config; kept for a clear failure if the lists drift apart
        raise ValueError(f"unknown optimizer {train.optimizer!r}")
    if train.mixed_precision == "float16":
        if train.loss_scale > 0:
            opt = tf.keras.mixed_precision.LossScaleOptimizer(
                opt, dynamic=False, initial_scale=train.loss_scale
            )
        else:
            opt = tf.keras.mixed_precision.LossScaleOptimizer(opt, dynamic=True)
    return opt


def decayed_variables(model: Any) -> list[Any]:
    """The variables under weight decay: kernels, i.e. trainable variables of rank >= 2."""
    return [v for v in model.trainable_variables if len(v.shape) >= 2]


def loss_fn(model: Any, images: tf.Tensor, labels: tf.Tensor, weight_decay: float) -> tf.Tensor:
    """Mean softmax cross-entropy on the batch plus the L2 term, in float32."""
    logits = tf.cast(model(images, training=True), tf.float32)
    xent = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    if weight_decay > 0:
        l2 = tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in decayed_variables(model)])
        return xent + weight_decay * l2
    return xent


def build_optimizer_state(optimizer: Any, variables: list[Any]) -> None:
    """Create the optimizer's slots now: Keras 2.14 makes them lazily, at the first step,
    which would be too late to broadcast them from the chief."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    inner.build(variables)


def optimizer_variables(optimizer: Any) -> list[Any]:
    """Every variable of the optimizer, loss-scale state included."""
    vs = optimizer.variables
    return list(vs() if callable(vs) else vs)


def scale_loss(optimizer: Any, loss: tf.Tensor) -> tf.Tensor:
    if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
        return optimizer.get_scaled_loss(loss)
    return loss


def unscale(optimizer: Any, grads: list[tf.Tensor]) -> list[tf.Tensor]:
    if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
        return optimizer.get_unscaled_gradients(grads)
    return grads


def clip(grads: list[tf.Tensor], norm: float) -> list[tf.Tensor]:
    if norm > 0:
        grads, _ = tf.clip_by_global_norm(grads, norm)
    return list(grads)
