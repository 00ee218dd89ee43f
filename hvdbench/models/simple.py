"""Tiny models: for harness overhead, correctness tests and the classic MNIST example."""

from __future__ import annotations

import tensorflow as tf

from hvdbench.models.registry import register


@register("trivial")
def trivial(shape: tuple[int, int, int], classes: int, data_format: str) -> tf.keras.Model:
    """tf_cnn_benchmarks' trivial model: flatten, one unit, classifier. Measures the harness."""
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(1, name="fc1"),
            tf.keras.layers.Dense(classes, name="logits"),
        ],
        name="trivial",
    )


@register("mnist_mlp")
def mnist_mlp(shape: tuple[int, int, int], classes: int, data_format: str) -> tf.keras.Model:
    """784-100-10 with ReLU, the network of TensorFlow's classic distributed MNIST example."""
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(100, activation="relu", name="hidden"),
            tf.keras.layers.Dense(classes, name="logits"),
        ],
        name="mnist_mlp",
    )
