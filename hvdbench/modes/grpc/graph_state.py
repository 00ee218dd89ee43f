"""Checkpoints of the ``tf.compat.v1`` graph modes, in the same format as the eager modes.

The graph modes keep their variables on the ps tasks, inside a graph that
``MonitoredTrainingSession`` finalises before the first step. ``tf.train.Checkpoint``
builds its save ops lazily at the first save, which a finalised graph refuses, so the
chief keeps an **eager mirror** instead: a Keras model of the same architecture (and one
eager variable per optimizer slot), which :class:`hvdbench.components.checkpoint.Checkpointer` saves
and restores exactly as in the eager modes. So every checkpoint is object-based with the
model under ``model``, and `hvdbench eval` reads it whatever mode trained it.

* before a save, :meth:`GraphMirror.pull` reads the graph's variables through the
  training session into the mirror;
* after a restore (at start-up, and again whenever the chief's session is recreated
  because a ps task lost its variables), :meth:`GraphMirror.push` assigns the mirror and
  the global step to the graph's variables, through assign ops built before the graph was
  finalised.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import tensorflow as tf

v1 = tf.compat.v1
T = TypeVar("T")


def eagerly(fn: Callable[[], T]) -> T:
    """``fn()`` in TF2's eager mode, even when called where a ``tf.Graph`` is the default
    (``MonitoredTrainingSession`` calls its ``init_fn`` inside the graph's context, and
    ``tf.init_scope`` only leaves function graphs): a new thread starts eager."""
    with ThreadPoolExecutor(1, thread_name_prefix="hvdbench-eager") as pool:
        return pool.submit(fn).result()


class GraphMirror:
    """Eager copies of a graph's global variables, and the ops that load them back."""

    def __init__(
        self, graph: Any, model_variables: list[Any], global_step: Any, build_model: Callable
    ) -> None:
        self.eager_model = build_model()  # eager: the process is in TF2's eager mode
        eager_vars = self.eager_model.variables
        if [tuple(v.shape) for v in eager_vars] != [tuple(v.shape) for v in model_variables]:
            raise RuntimeError("the eager mirror of the model has other variables")
        with graph.as_default():
            known = {id(v) for v in model_variables} | {id(global_step)}
            # Optimizer slots and accumulators (momentum, Adam's moments and powers): every
            # other global variable, in a stable order.
            others = sorted(
                (v for v in v1.global_variables() if id(v) not in known), key=lambda v: v.name
            )
            self.graph_variables = [*model_variables, *others]
            self.global_step = global_step
            self._feeds = [
                v1.placeholder(v.dtype.base_dtype, v.shape) for v in self.graph_variables
            ]
            self._step_feed = v1.placeholder(global_step.dtype.base_dtype, [])
            self._load = tf.group(
                *[v.assign(p) for v, p in zip(self.graph_variables, self._feeds)],
                global_step.assign(self._step_feed),
            )
        self.slots = tf.Module()
        self.slots.slot_variables = [
            tf.Variable(tf.zeros(v.shape, v.dtype.base_dtype), trainable=False, name="slot")
            for v in others
        ]
        self.mirror_variables = [*eager_vars, *self.slots.slot_variables]

    def checkpoint_objects(self) -> dict[str, Any]:
        """``model``, as in every mode, and the optimizer's state under its own key (a
        ``tf.compat.v1`` optimizer's slots, which a Keras optimizer would not match)."""
        return {"model": self.eager_model, "graph_optimizer": self.slots}

    def pull(self, sess: Any) -> int:
        """Copy the graph's current values into the mirror (before a save); return the
        global step read with them."""
        values, step = sess.run([self.graph_variables, self.global_step])

        def assign() -> None:
            for mirror, value in zip(self.mirror_variables, values):
                mirror.assign(value)

        eagerly(assign)
        return int(step)

    def push(self, sess: Any, global_step: int) -> None:
        """Load the mirror and ``global_step`` into the graph (after a restore)."""
        values = eagerly(lambda: [m.numpy() for m in self.mirror_variables])
        feed = dict(zip(self._feeds, values))
        feed[self._step_feed] = global_step
        sess.run(self._load, feed_dict=feed)
