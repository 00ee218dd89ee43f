"""Input sources: a name (``data.source``) maps to a function returning batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hvdbench.config import Config

Batch = tuple[Any, Any]


def make_input(
    cfg: Config, shape: tuple[int, int, int], classes: int, rank: int
) -> Callable[[], Batch]:
    """A function returning the next (images, labels) batch of this rank's shard."""
    if cfg.data.source == "synthetic":
        from hvdbench.data.synthetic import synthetic_input

        return synthetic_input(cfg, shape, classes, rank)
    raise ValueError(f"unknown data source {cfg.data.source!r}")  # the config validates it
