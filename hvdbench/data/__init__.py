"""Input sources: ``data.source`` selects a reader; every reader yields batches of its shard.

``make_dataset`` is the interface every mode can adopt: a ``tf.data.Dataset`` of
``(images, labels)`` batches of this rank's shard, which an eager mode iterates and a graph
mode turns into an iterator op. ``make_input`` wraps it (or the synthetic batch, which is
generated once on the device and reused) as a function returning the next batch.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

from hvdbench.config import Config
from hvdbench.data import layout
from hvdbench.errors import UsageError

Batch = tuple[Any, Any]
REAL_SOURCES = ("cifar10", "mnist", "imagenet")


def make_dataset(
    cfg: Config,
    shape: tuple[int, int, int],
    *,
    training: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    batch_size: int | None = None,
) -> Any:
    """The batches of shard ``shard_index`` of ``num_shards`` of a real data set's split.

    Training batches repeat forever, shuffled and distorted; evaluation batches cover the
    split once. Raises UsageError when the data directory is missing or malformed.
    """
    from hvdbench.data import cifar10, imagenet, mnist

    readers = {"cifar10": cifar10.dataset, "mnist": mnist.dataset, "imagenet": imagenet.dataset}
    if cfg.data.source not in readers:
        raise ValueError(f"data.source {cfg.data.source!r} has no reader")
    return readers[cfg.data.source](
        cfg,
        shape,
        training=training,
        shard_index=shard_index,
        num_shards=num_shards,
        batch_size=batch_size or cfg.train.per_device_batch_size,
    )


def make_synthetic_input(
    cfg: Config, shape: tuple[int, int, int], classes: int, rank: int
) -> Callable[[], Batch]:
    """One random batch generated once on the device and returned at every call."""
    from hvdbench.data.synthetic import synthetic_input

    return synthetic_input(cfg, shape, classes, rank)


def make_input(
    cfg: Config, shape: tuple[int, int, int], classes: int, rank: int, num_shards: int = 1
) -> Callable[[], Batch]:
    """A function returning the next (images, labels) batch of this rank's shard."""
    if cfg.data.source == "synthetic":
        return make_synthetic_input(cfg, shape, classes, rank)
    iterator = iter(make_dataset(cfg, shape, shard_index=rank, num_shards=num_shards))

    def next_batch() -> Batch:
        with read_errors(cfg):
            return next(iterator)

    return next_batch


@contextlib.contextmanager
def read_errors(cfg: Config) -> Iterator[None]:
    """Content the layout check cannot see (a bad JPEG, a damaged record) fails tf.data
    mid-run: report it as one line naming the data directory, not a traceback."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as e:
        text = re.sub(r"\{\{[^}]*\}\}\s*", "", e.message or str(e)).strip()
        first = (text.splitlines() or [type(e).__name__])[0][:300]
        raise UsageError(
            f"data.dir: reading {cfg.data.source} data from {cfg.data.dir!r} failed: {first}"
        ) from None


def describe(cfg: Config, training: bool = True) -> dict[str, Any]:
    """What the record says about the input: source, directory, files, example count."""

    files = layout.files(cfg.data.source, cfg.data.dir, training)
    info: dict[str, Any] = {"source": cfg.data.source}
    if files is not None:
        info.update(
            dir=cfg.data.dir,
            split="train" if training else "eval",
            files=[f.rsplit("/", 1)[-1] for f in files.paths],
            num_examples=files.num_examples,
            distortions=cfg.data.distortions and training,
            parallel_calls=cfg.data.parallel_calls or "autotune",
            prefetch_batches=cfg.data.prefetch_batches or "autotune",
        )
    return info
