"""CIFAR-sized networks: the TensorFlow tutorial CNN and the CIFAR ResNets of He et al."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvdbench.models.registry import register

layers = tf.keras.layers


@register("cifar10_cnn")
def cifar10_cnn(shape: tuple[int, int, int], classes: int, data_format: str) -> tf.keras.Model:
    """The CIFAR-10 tutorial network: two conv(5x5, 64)-pool(3x3/2)-LRN stages, 384, 192."""
    axis = 1 if data_format == "channels_first" else 3

    def lrn(x: tf.Tensor) -> tf.Tensor:
        if axis == 1:  # LRN normalises the last axis
            x = tf.transpose(x, [0, 2, 3, 1])
            x = tf.nn.local_response_normalization(x, 4, 1.0, 0.001 / 9.0, 0.75)
            return tf.transpose(x, [0, 3, 1, 2])
        return tf.nn.local_response_normalization(x, 4, 1.0, 0.001 / 9.0, 0.75)

    inputs = tf.keras.Input(shape)
    x = layers.Conv2D(
        64, 5, padding="same", activation="relu", data_format=data_format, name="conv1"
    )(inputs)
    x = layers.MaxPool2D(3, 2, padding="same", data_format=data_format, name="pool1")(x)
    x = layers.Lambda(lrn, name="norm1")(x)
    x = layers.Conv2D(
        64, 5, padding="same", activation="relu", data_format=data_format, name="conv2"
    )(x)
    x = layers.Lambda(lrn, name="norm2")(x)
    x = layers.MaxPool2D(3, 2, padding="same", data_format=data_format, name="pool2")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(384, activation="relu", name="local3")(x)
    x = layers.Dense(192, activation="relu", name="local4")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name="cifar10_cnn")


def _cifar_resnet(
    depth: int, shape: tuple[int, int, int], classes: int, data_format: str
) -> tf.keras.Model:
    """ResNet v1 for CIFAR: 3 stages of (depth-2)/6 basic blocks, 16-32-64 filters."""
    blocks = (depth - 2) // 6
    axis = 1 if data_format == "channels_first" else 3

    def conv(filters: int, stride: int, name: str) -> Any:
        return layers.Conv2D(
            filters,
            3,
            stride,
            padding="same",
            use_bias=False,
            data_format=data_format,
            kernel_initializer="he_normal",
            name=name,
        )

    def bn(name: str) -> Any:
        return layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5, name=name)

    inputs = tf.keras.Input(shape)
    x = layers.ReLU()(bn("bn0")(conv(16, 1, "conv0")(inputs)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            y = layers.ReLU()(bn(f"{name}_bn1")(conv(filters, stride, f"{name}_conv1")(x)))
            y = bn(f"{name}_bn2")(conv(filters, 1, f"{name}_conv2")(y))
            if stride != 1 or x.shape[axis] != filters:
                x = bn(f"{name}_bnsc")(
                    layers.Conv2D(
                        filters,
                        1,
                        stride,
                        use_bias=False,
                        data_format=data_format,
                        name=f"{name}_convsc",
                    )(x)
                )
            x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D(data_format=data_format)(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name=f"resnet{depth}")


@register("resnet20")
def resnet20(shape: tuple[int, int, int], classes: int, data_format: str) -> tf.keras.Model:
    return _cifar_resnet(20, shape, classes, data_format)


@register("resnet32")
def resnet32(shape: tuple[int, int, int], classes: int, data_format: str) -> tf.keras.Model:
    return _cifar_resnet(32, shape, classes, data_format)


@register("resnet56")
def resnet56(shape: tuple[int, int, int], classes: int, data_format: str) -> tf.keras.Model:
    return _cifar_resnet(56, shape, classes, data_format)
