"""The builders' registry: a model module registers each builder under its name.

Kept apart from :mod:`hvdbench.models`, which imports the builder modules (lazily: they
import TensorFlow), so that no import runs in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hvdbench.models.specs import MODEL_SPECS

Builder = Callable[[tuple[int, int, int], int, str], Any]
_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register a builder under ``name``, which must have a spec."""

    def wrap(fn: Builder) -> Builder:
        if name not in MODEL_SPECS:
            raise KeyError(f"model {name!r} has no entry in MODEL_SPECS")
        _BUILDERS[name] = fn
        return fn

    return wrap
