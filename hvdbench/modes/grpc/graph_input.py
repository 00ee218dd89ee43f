"""The input of the ``tf.compat.v1`` graph modes: the same readers as every mode, as a
``tf.data`` pipeline inside the worker's graph.

A ps worker builds one graph and runs it step after step through a session, so its input
is an iterator op in that graph, on the worker's own CPU (never on a ps task), reading the
worker's shard of the split and prefetching as the eager modes' pipelines do. For
``data.compare_synthetic`` the graph also holds the synthetic batch the eager modes would
draw (``seed + shard``), and a flag fed at each step picks one or the other: the real
input is not read while the synthetic steps are timed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from hvdbench import models
from hvdbench.config import Config
from hvdbench.data import make_dataset
from hvdbench.modes.grpc.graph_state import eagerly
from hvdbench.modes.grpc.graph_training import synthetic_arrays

v1 = tf.compat.v1


@dataclass
class GraphInput:
    """The batch tensors of one worker's graph, and the feed that selects the synthetic
    batch (empty unless ``data.compare_synthetic``)."""

    images: Any
    labels: Any
    use_synthetic: Any = None
    feed: dict[Any, Any] = field(default_factory=dict)

    def select(self, synthetic: bool) -> None:
        """Train on the synthetic batch (True) or on the real input (False) from now on."""
        if self.use_synthetic is None:
            raise RuntimeError("this graph holds no synthetic batch to compare with")
        self.feed = {self.use_synthetic: True} if synthetic else {}


def synthetic_constants(cfg: Config, shard: int) -> tuple[Any, Any]:
    """The synthetic batch of shard ``shard`` as graph constants, drawn eagerly (in a
    thread, where TF2 is eager whatever graph is the default here) exactly as the eager
    modes draw it: ``synthetic_batch(..., seed + shard)``."""
    images, labels = eagerly(lambda: synthetic_arrays(cfg, shard))
    return tf.constant(images), tf.constant(labels)


def build(cfg: Config, device: str, shard: int, num_shards: int) -> GraphInput:
    """The input of a worker's graph (call with that graph as the default), on ``device``'s
    CPU: shard ``shard`` of ``num_shards`` of the real split, or the synthetic batch."""
    with tf.device(f"{device}/device:CPU:0"):
        if cfg.data.source == "synthetic":
            images, labels = synthetic_constants(cfg, shard)
            return GraphInput(images, labels)
        dataset = make_dataset(
            cfg, models.input_shape(cfg), shard_index=shard, num_shards=num_shards
        )
        iterator = v1.data.make_one_shot_iterator(dataset)
        if not cfg.data.compare_synthetic:
            images, labels = iterator.get_next()
            return GraphInput(images, labels)
        synth_images, synth_labels = synthetic_constants(cfg, shard)
        flag = v1.placeholder_with_default(False, [], name="use_synthetic")
        images, labels = tf.cond(
            flag, lambda: (synth_images, synth_labels), lambda: iterator.get_next()
        )
        images = tf.ensure_shape(images, synth_images.shape)
        labels = tf.ensure_shape(labels, synth_labels.shape)
        return GraphInput(images, labels, use_synthetic=flag)
