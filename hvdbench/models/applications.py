"""ImageNet networks from ``tf.keras.applications``, untrained (``weights=None``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from hvdbench.models.registry import register

_APPS: dict[str, Callable[..., Any]] = {
    "resnet50": tf.keras.applications.ResNet50,
    "resnet101": tf.keras.applications.ResNet101,
    "resnet152": tf.keras.applications.ResNet152,
    "inception3": tf.keras.applications.InceptionV3,
    "vgg16": tf.keras.applications.VGG16,
    "xception": tf.keras.applications.Xception,
    "mobilenet": tf.keras.applications.MobileNet,
}


def _application(name: str) -> Callable[[tuple[int, int, int], int, str], tf.keras.Model]:
    def build(shape: tuple[int, int, int], classes: int, data_format: str) -> tf.keras.Model:
        # The data format was set globally by models.build(); keras.applications reads it.
        return _APPS[name](
            weights=None, input_shape=shape, classes=classes, classifier_activation=None
        )

    build.__name__ = name
    build.__doc__ = f"{_APPS[name].__name__} from tf.keras.applications, weights=None."
    return build


for _name in _APPS:
    register(_name)(_application(_name))
