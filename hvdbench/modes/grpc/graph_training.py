"""What the ``tf.compat.v1`` graph modes share: their optimizers and their input.

``SyncReplicasOptimizer`` wraps ``tf.compat.v1.train`` optimizers only, so the gRPC graph
modes use those, with every hyperparameter taken from the config as in the Keras modes
(the loss, L2 term included, is :func:`hvdbench.components.training.loss_fn` in every mode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import tensorflow as tf

from hvdbench import models
from hvdbench.config import Config
from hvdbench.modes.grpc import packing

v1 = tf.compat.v1


def synthetic_arrays(cfg: Config, worker_index: int) -> tuple[np.ndarray, np.ndarray]:
    """This worker's synthetic batch as arrays, drawn eagerly (before any graph is built)
    exactly as the eager modes draw it: ``synthetic_batch(..., seed + worker_index)``."""
    from hvdbench.data.synthetic import synthetic_batch

    images, labels = synthetic_batch(
        cfg.train.per_device_batch_size,
        models.input_shape(cfg),
        models.num_classes(cfg),
        cfg.train.seed + worker_index,
    )
    return images.numpy(), labels.numpy()


def make_local(variables: list[Any]) -> None:
    """Move variables from GLOBAL_VARIABLES to LOCAL_VARIABLES: each worker initialises
    its own copy, and the chief does not wait for the others' copies."""
    graph = v1.get_default_graph()
    global_vars = graph.get_collection_ref(v1.GraphKeys.GLOBAL_VARIABLES)
    trainable = graph.get_collection_ref(v1.GraphKeys.TRAINABLE_VARIABLES)
    ids = {id(v) for v in variables}
    global_vars[:] = [v for v in global_vars if id(v) not in ids]
    trainable[:] = [v for v in trainable if id(v) not in ids]
    for v in variables:
        graph.add_to_collection(v1.GraphKeys.LOCAL_VARIABLES, v)


def local_model_copy(
    ps_model: Any, build_local_model: Callable[[], Any], share_statistics: bool = True
) -> tuple[Any, list[Any]]:
    """Build a worker-local model (in the caller's device scope) whose trainable variables
    stay out of the global collection and match the ps model's one to one.

    With ``share_statistics``, its non-trainable variables (batch norm's moving mean and
    variance) are not copies: the local model is built on the ps model's own, so that its
    forward pass updates the moving averages on the ps, as the plain parameter_server mode
    does, and a checkpoint or ``eval`` of the ps variables sees them trained. (Local copies
    of them, updated in place, would train on the workers and leave the ps's at their
    initial values.) Without it they are local too, for a caller that sends their updates
    to the ps model's itself (:mod:`hvdbench.modes.grpc.moving_stats`)."""
    shared = list(ps_model.non_trainable_variables) if share_statistics else []
    with _reusing(shared) if share_statistics else nullcontext():
        model = build_local_model()
    variables = model.trainable_variables
    if len(variables) != len(ps_model.trainable_variables) or any(
        a.shape != b.shape for a, b in zip(variables, ps_model.trainable_variables)
    ):
        raise RuntimeError("the local copy of the model has other variables")
    reused = {id(v) for v in shared}
    if share_statistics and {id(v) for v in model.non_trainable_variables} != reused:
        raise RuntimeError("the local copy of the model did not reuse the ps model's statistics")
    make_local([v for v in model.variables if id(v) not in reused])
    return model, variables


@contextmanager
def _reusing(variables: list[Any]) -> Iterator[None]:
    """While building a model: hand out ``variables`` in order, instead of creating them,
    for each non-trainable variable the model asks for (same shape required)."""
    left = list(variables)

    def creator(next_creator: Any, **kwargs: Any) -> Any:
        if kwargs.get("trainable", True) is not False:
            return next_creator(**kwargs)
        if not left:
            raise RuntimeError("the local copy of the model has more non-trainable variables")
        var = left.pop(0)
        shape = kwargs.get("shape")
        if shape is not None and tuple(var.shape) != tuple(tf.TensorShape(shape)):
            raise RuntimeError(f"the local copy's {kwargs.get('name')} has another shape")
        return var

    with v1.variable_creator_scope(creator):
        yield
    if left:
        raise RuntimeError("the local copy of the model has fewer non-trainable variables")


def read_values(ps_variables: list[Any], device: str, packed: bool) -> list[Any]:
    """The ps variables' values for ``device``: one transfer per ps task
    (:func:`hvdbench.modes.grpc.packing.read_from_ps`), or one per variable."""
    if packed:
        return packing.read_from_ps(ps_variables, device)
    return [v.read_value() for v in ps_variables]


class LocalCopy:
    """A worker-local copy of the model whose variables mirror ps variables."""

    def __init__(
        self, ps_model: Any, build_local_model: Callable[[], Any], device: str, packed: bool
    ) -> None:
        self.ps_variables = ps_model.trainable_variables
        self.device, self.packed = device, packed
        with tf.device(device):
            self.local_model, self.local_variables = local_model_copy(
                ps_model, build_local_model, share_statistics=not packed
            )
            self.refresh = self._assign_from_ps()

    def _assign_from_ps(self) -> Any:
        values = read_values(self.ps_variables, self.device, self.packed)
        return tf.group(*[lv.assign(x) for lv, x in zip(self.local_variables, values)])

    def refresh_after(self, op: Any) -> Any:
        """``op``, then the copy refreshed from the ps."""
        with tf.control_dependencies([op]):
            return self._assign_from_ps()

    def gradients(self, loss: Any) -> list[tuple[Any, Any]]:
        """Gradients w.r.t. the local copy, paired with the ps variables they update."""
        grads = tf.gradients(loss, self.local_variables)
        return list(zip(grads, self.ps_variables))


def moving_average_updates(graph: Any, first_op: int) -> list[Any]:
    """The ``assign_sub`` ops created since op number ``first_op``: Keras batch norm's
    moving-average updates of a forward pass, which a v1 session only runs if asked."""
    kinds = ("AssignSubVariableOp", "AssignSub")
    ops = [op for op in graph.get_operations()[first_op:] if op.type in kinds]
    # A Keras model built in this window also traced itself on its Input placeholder;
    # those updates belong to no step.
    return [op for op in ops if not _depends_on_placeholder(op)]


def _depends_on_placeholder(op: Any) -> bool:
    seen = set()
    stack = [op]
    while stack:
        cur = stack.pop()
        if cur.type == "Placeholder":
            return True
        for t in cur.inputs:
            if t.op.name not in seen:
                seen.add(t.op.name)
                stack.append(t.op)
    return False
