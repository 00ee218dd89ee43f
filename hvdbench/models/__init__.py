"""Model registry: a name maps to a function that builds a Keras model.

``specs.MODEL_SPECS`` describes each model without TensorFlow; this module builds them.
Builders take ``(input_shape, num_classes, data_format)`` and return a ``tf.keras.Model``
whose output is logits (no softmax), so that every mode computes the same loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hvdbench.errors import UsageError
from hvdbench.models.registry import _BUILDERS, Builder, register
from hvdbench.models.specs import MODEL_SPECS, ModelSpec

if TYPE_CHECKING:
    from hvdbench.config import Config

__all__ = [
    "Builder",
    "ModelSpec",
    "build",
    "input_shape",
    "num_classes",
    "register",
    "registered",
    "spec",
]


def _load_builders() -> None:
    if set(_BUILDERS) != set(MODEL_SPECS):
        from hvdbench.models import applications, cifar, simple  # noqa: F401


def registered() -> list[str]:
    """Every registered model name."""
    _load_builders()
    return sorted(_BUILDERS)


def input_shape(cfg: Config) -> tuple[int, int, int]:
    """(height, width, channels) or (channels, height, width), per ``model.data_format``."""
    spec = MODEL_SPECS[cfg.model.name]
    size = cfg.model.image_size or spec.image_size
    if cfg.model.data_format == "channels_first":
        return (spec.channels, size, size)
    return (size, size, spec.channels)


def num_classes(cfg: Config) -> int:
    return cfg.model.num_classes or MODEL_SPECS[cfg.model.name].num_classes


def spec(name: str) -> ModelSpec:
    return MODEL_SPECS[name]


def build(cfg: Config) -> Any:
    """Build the configured model (its variables are created, so it can be broadcast)."""
    _load_builders()
    name = cfg.model.name
    if name not in _BUILDERS:
        raise UsageError(f"model.name: {name!r} is not one of: {', '.join(sorted(_BUILDERS))}")
    import tensorflow as tf

    tf.keras.backend.set_image_data_format(cfg.model.data_format)
    shape = input_shape(cfg)
    model = _BUILDERS[name](shape, num_classes(cfg), cfg.model.data_format)
    model.build((None, *shape))
    return model
