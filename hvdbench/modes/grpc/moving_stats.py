"""Batch norm's moving statistics in the gRPC graph modes: one transfer per ps task and step.

In a ``tf.compat.v1`` graph, Keras batch norm updates each moving mean and variance with an
``assign_sub`` colocated with the variable, on its ps task, computed there from the batch
moments the worker computes. resnet20's 21 batch-norm layers make that 42 moments and 21
momentum constants crossing to the ps every step and, when the gradients waited for the
updates, 42 control edges back: about a hundred gRPC transfers a step, where the packed
gradients take one (:mod:`hvdbench.modes.grpc.packing`). Nothing waits for the updates now:
they run with the step, as targets of their own on their ps tasks.

Under :func:`deferred`, a model's forward pass records each update instead of building it
(Keras builds them in one method, ``_assign_moving_average``, which is replaced on the
model's batch-norm layers for the duration). :func:`build_updates` then moves the recorded
moments to each variable's task in one packed transfer and builds the layer's own update
there, on the moved values: the same ``assign_sub`` and the same values, with one op per
ps task for the step to run.

The update may go to another variable than the one the layer holds: a worker-local copy of
the model (``distributed_replicated``, staged variables) has moving statistics of its own,
so that its forward pass reads no statistics from the ps (a training step's fused batch
norm takes them as inputs, and with TensorFlow's default averaging factor of 1 does not use
them), and its updates go to the ps model's statistics, as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from hvdbench.modes.grpc import packing

METHOD = "_assign_moving_average"


@dataclass(frozen=True)
class Pending:
    """One moving-average update a forward pass asked for."""

    layer: Any
    variable: Any
    value: Any  # the batch moment, on the worker
    momentum: Any  # a Python number where it is static
    inputs_size: Any


def _static(x: Any) -> Any:
    """``x`` as a Python number where TensorFlow knows its value, else ``x``."""
    if x is None or isinstance(x, (int, float)):
        return x
    value = tf.get_static_value(x)
    return x if value is None else value.item()


def batch_norm_layers(model: Any) -> list[Any]:
    """The layers of ``model`` (itself included) whose moving-average updates can be
    deferred: those that build them in ``_assign_moving_average``, except batch
    renormalisation, which uses what it returns (its updates are built as Keras builds
    them)."""
    found = [
        m
        for m in [model, *model.submodules]
        if callable(getattr(m, METHOD, None)) and not getattr(m, "renorm", False)
    ]
    return list({id(m): m for m in found}.values())


@contextmanager
def deferred(model: Any) -> Iterator[list[Pending]]:
    """While building ``model``'s forward pass: record its moving-average updates in the
    list this yields, instead of building them."""
    pending: list[Pending] = []
    layers = batch_norm_layers(model)

    def recorder(layer: Any) -> Any:
        def record(variable: Any, value: Any, momentum: Any, inputs_size: Any = None) -> Any:
            pending.append(Pending(layer, variable, value, _static(momentum), _static(inputs_size)))
            return tf.no_op()  # add_update ignores it; the update is built later

        return record

    for layer in layers:  # object.__setattr__: not a tracked attribute of the layer
        object.__setattr__(layer, METHOD, recorder(layer))
    try:
        yield pending
    finally:
        for layer in layers:
            object.__delattr__(layer, METHOD)


def build_updates(pending: list[Pending], targets: Mapping[int, Any] | None = None) -> list[Any]:
    """The updates of ``pending``, built on their variables' tasks: one op per task.

    ``targets`` maps ``id(variable)`` of a recorded variable to the variable that takes its
    update instead (a local copy's statistics to the ps model's); others update themselves.
    The moments bound for one task and dtype cross in one transfer."""
    targets = targets or {}
    items = [(p, targets.get(id(p.variable), p.variable)) for p in pending]
    groups: dict[tuple[str, Any], list[tuple[Pending, Any]]] = {}
    for p, var in items:
        groups.setdefault((var.device, var.dtype.base_dtype), []).append((p, var))
    ops = []
    for (device, _), members in groups.items():
        values = [tf.cast(p.value, var.dtype.base_dtype) for p, var in members]
        moved = packing.move(values, [v.shape for v in values], device)
        with tf.device(device):
            updates = [
                type(p.layer)._assign_moving_average(p.layer, var, x, p.momentum, p.inputs_size)
                for (p, var), x in zip(members, moved)
            ]
            ops.append(tf.group(*updates))
    return ops


def statistics_map(local_model: Any, ps_model: Any) -> dict[int, Any]:
    """``id`` of each of ``local_model``'s non-trainable variables -> ``ps_model``'s
    variable at the same place (same shape required)."""
    local, ps = local_model.non_trainable_variables, ps_model.non_trainable_variables
    if len(local) != len(ps) or any(a.shape != b.shape for a, b in zip(local, ps)):
        raise RuntimeError("the local copy of the model has other non-trainable variables")
    return {id(a): b for a, b in zip(local, ps)}
