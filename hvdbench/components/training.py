"""The optimisation problem shared by the TensorFlow 2 modes: optimizer, loss, precision.

Every mode trains the same thing: softmax cross-entropy on the model's logits, plus an
explicit L2 term ``weight_decay * sum(w^2)/2`` over the kernels (not biases or batch-norm
parameters), with every optimizer hyperparameter taken from the config, because Keras'
and ``tf.compat.v1``'s defaults differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from hvdbench.components import xla
from hvdbench.config import Config, TrainConfig


def set_precision_policy(cfg: Config) -> str:
    """Apply the Keras mixed-precision policy before the model is built; return its name."""
    policy = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[
        cfg.train.mixed_precision
    ]
    tf.keras.mixed_precision.set_global_policy(policy)
    return policy


# Every optimizer once, for both APIs: (Keras class, tf.compat.v1.train class, and each
# hyperparameter as (Keras argument, v1 argument or None, the TrainConfig field or a
# value)). Every hyperparameter is explicit, because Keras' and v1's defaults differ.
_OPTIMIZERS: dict[str, tuple[str, str, tuple[tuple[str, str | None, str | float], ...]]] = {
    "sgd": ("SGD", "GradientDescentOptimizer", (("momentum", None, 0.0),)),
    "momentum": ("SGD", "MomentumOptimizer", (("momentum", "momentum", "momentum"),)),
    "rmsprop": (
        "RMSprop",
        "RMSPropOptimizer",
        (
            ("rho", "decay", "rho"),
            ("momentum", "momentum", "momentum"),
            ("epsilon", "epsilon", "epsilon"),
        ),
    ),
    "adam": (
        "Adam",
        "AdamOptimizer",
        (
            ("beta_1", "beta1", "beta_1"),
            ("beta_2", "beta2", "beta_2"),
            ("epsilon", "epsilon", "epsilon"),
        ),
    ),
}


def _optimizer_args(train: TrainConfig, keras: bool) -> tuple[str, dict[str, Any]]:
    """The class name and keyword arguments of ``train.optimizer``, for Keras or v1."""
    if train.optimizer not in _OPTIMIZERS:  # validated by the config; a clear failure else
        raise ValueError(f"unknown optimizer {train.optimizer!r}")
    keras_name, v1_name, hyper = _OPTIMIZERS[train.optimizer]
    kwargs: dict[str, Any] = {}
    for keras_arg, v1_arg, source in hyper:
        arg = keras_arg if keras else v1_arg
        if arg is not None:
            kwargs[arg] = getattr(train, source) if isinstance(source, str) else source
    return (keras_name if keras else v1_name), kwargs


def make_optimizer(train: TrainConfig) -> Any:
    """The configured Keras optimizer, wrapped for loss scaling under float16."""
    name, kwargs = _optimizer_args(train, keras=True)
    opt: Any = getattr(tf.keras.optimizers, name)(train.learning_rate, **kwargs)
    if train.mixed_precision == "float16":
        if train.loss_scale > 0:
            opt = tf.keras.mixed_precision.LossScaleOptimizer(
                opt, dynamic=False, initial_scale=train.loss_scale
            )
        else:
            opt = tf.keras.mixed_precision.LossScaleOptimizer(opt, dynamic=True)
    return opt


def make_v1_optimizer(train: TrainConfig) -> Any:
    """The configured ``tf.compat.v1.train`` optimizer, for the graph (ps) modes."""
    name, kwargs = _optimizer_args(train, keras=False)
    return getattr(tf.compat.v1.train, name)(train.learning_rate, **kwargs)


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


def clip_pairs(grads_and_vars: list[tuple[Any, Any]], norm: float) -> list[tuple[Any, Any]]:
    """:func:`clip` for the (gradient, variable) pairs of a v1 optimizer."""
    if norm <= 0:
        return grads_and_vars
    grads = clip([g for g, _ in grads_and_vars], norm)
    return list(zip(grads, [v for _, v in grads_and_vars]))


def loss_and_gradients(
    model: Any,
    optimizer: Any,
    images: tf.Tensor,
    labels: tf.Tensor,
    weight_decay: float,
    variables: list[Any],
    *,
    replicas: int = 1,
    tape: Callable[[Any], Any] = lambda t: t,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The forward and backward pass of every eager mode: the loss (L2 term included)
    and its gradients, taken of the loss scaled for float16 (and divided by ``replicas``
    where an optimizer sums them). The gradients are still scaled: :func:`unscale` them,
    after an exchange where the mode has one. ``tape`` may wrap the tape before the
    gradients are taken (Horovod's DistributedGradientTape)."""
    with tf.GradientTape() as t:
        loss = loss_fn(model, images, labels, weight_decay)
        scaled = scale_loss(optimizer, loss / replicas if replicas != 1 else loss)
    return loss, tape(t).gradient(scaled, variables)


def xla_pass(fn: Callable[..., Any]) -> Any:
    """``fn`` compiled by XLA (``tf.function(jit_compile=True)``), under the name whose HLO
    modules :mod:`hvdbench.components.xla` looks for as the proof that XLA compiled the step."""

    def hvdbench_xla_pass(*args: Any) -> Any:
        return fn(*args)

    assert hvdbench_xla_pass.__name__ == xla.PASS_NAME
    return tf.function(hvdbench_xla_pass, jit_compile=True)


def set_learning_rate(optimizer: Any, value: float) -> float:
    """Give a Keras optimizer the config's learning rate; return the one it had. Keras keeps
    it in a variable, which a checkpoint saves and restores: after a restore it would be the
    old run's."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    previous = float(inner.learning_rate.numpy())
    inner.learning_rate.assign(value)
    return previous


def apply_gradients(optimizer: Any, grads: list[Any], variables: list[Any], norm: float) -> None:
    """Unscale, clip to the global norm and apply: the end of every eager step."""
    optimizer.apply_gradients(zip(clip(unscale(optimizer, grads), norm), variables))
