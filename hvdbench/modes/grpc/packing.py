"""One tensor per ps task and step instead of one per variable (``ps.pack_transfers``).

In a ``tf.compat.v1`` graph split across tasks, every tensor that crosses from one task to
another is a gRPC ``RecvTensor`` call of its own. resnet20 has 65 trainable variables, so
a worker's step was 65 calls for the gradients and 65 for the values, each one handled by
both tasks' gRPC threads; on two cores those threads take CPU from the compute threads.
Packed, the tensors bound for one task are flattened and concatenated on the sending side,
and split and reshaped back on the receiving side: the same values, in one call per ps
task and direction.

Only dense float tensors of one dtype are packed together; anything else (``None``
gradients, ``IndexedSlices``) crosses as it did, on its own.

``SyncReplicasOptimizer`` gives each variable its own accumulator on the variable's task,
and each accumulator takes the worker's local step, read anew for each: 65 more scalars
crossing a step. :func:`one_local_step_read` makes them one read, which crosses once per
ps task. Batch norm's moving-average updates are packed by
:mod:`hvdbench.modes.grpc.moving_stats`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import tensorflow as tf


def _groups(items: list[tuple[int, Any, Any]]) -> dict[tuple[str, Any], list[tuple[int, Any]]]:
    """(index, tensor, device/dtype key) -> {key: [(index, tensor), ...]} in order."""
    out: dict[tuple[str, Any], list[tuple[int, Any]]] = defaultdict(list)
    for i, value, key in items:
        out[key].append((i, value))
    return out


def move(
    tensors: list[Any], shapes: list[Any], device: str, after: Sequence[Any] = ()
) -> list[Any]:
    """``tensors`` (dense, one dtype, on one device: the caller's scope) as they arrive
    on ``device`` through one transfer: flattened and concatenated here, split and
    reshaped there, the split after the ops or tensors ``after``."""
    if len(tensors) == 1:
        with tf.device(device), tf.control_dependencies(after):
            return [tf.identity(tensors[0])]
    flat = tf.concat([tf.reshape(t, [-1]) for t in tensors], 0)
    sizes = [int(tf.TensorShape(s).num_elements()) for s in shapes]
    with tf.device(device):
        with tf.control_dependencies(after):
            parts = tf.split(flat, sizes)
        return [tf.reshape(p, s) for p, s in zip(parts, shapes)]


def gradients_to_ps(
    pairs: list[tuple[Any, Any]], after: Sequence[Any] = ()
) -> list[tuple[Any, Any]]:
    """(gradient, ps variable) pairs whose gradients reach each variable's task in one
    transfer per task and dtype. Called in the worker's device scope.

    ``after``: ops on ps tasks (:func:`read_packed`'s ``reads``) that must run before
    the update; each task's gradients wait for that task's, there, so
    that the ordering adds no transfer (one on a task without gradients of its own waits
    on every task's)."""
    out = list(pairs)
    dense = [
        (i, g, (v.device, g.dtype))
        for i, (g, v) in enumerate(pairs)
        if isinstance(g, tf.Tensor) and g.shape.is_fully_defined()
    ]
    groups = _groups(dense)
    devices = {device for device, _ in groups}
    elsewhere = [t for t in after if t.device not in devices]
    for (device, _), members in groups.items():
        idx = [i for i, _ in members]
        wait = [t for t in after if t.device == device] + elsewhere
        moved = move([g for _, g in members], [pairs[i][1].shape for i in idx], device, wait)
        for i, g in zip(idx, moved):
            out[i] = (g, pairs[i][1])
    return out


def read_from_ps(variables: list[Any], device: str) -> list[Any]:
    """The values of ``variables`` (ps variables) as they arrive on ``device``, in one
    transfer per ps task and dtype; each group is read on its own task."""
    return read_packed(variables, device)[0]


def read_packed(variables: list[Any], device: str) -> tuple[list[Any], list[Any]]:
    """:func:`read_from_ps`'s values, and its ``reads``: one op per group, on the group's
    ps task, that runs once the reads the values are moved from have."""
    values: list[Any] = [None] * len(variables)
    groups: list[Any] = []
    keyed = [(i, v, (v.device, v.dtype.base_dtype)) for i, v in enumerate(variables)]
    for (ps_device, _), members in _groups(keyed).items():
        with tf.device(ps_device):
            reads = [v.read_value() for _, v in members]
            moved = move(reads, [v.shape for _, v in members], device)
            groups.append(tf.group(*reads))
        for (i, _), value in zip(members, moved):
            values[i] = value
    return values, groups


LOCAL_STEP = "sync_rep_local_step"  # the variable SyncReplicasOptimizer.apply_gradients makes


@contextmanager
def one_local_step_read() -> Iterator[None]:
    """Around ``SyncReplicasOptimizer.apply_gradients``: the local step it creates gives one
    tensor (one read) to every accumulator that converts it, instead of a read each.

    The value is the same: the local step changes only in the train op's final assign,
    which waits for every accumulator. Conversions for a reference, or to another dtype,
    read as before."""

    def creator(next_creator: Any, **kwargs: Any) -> Any:
        var = next_creator(**kwargs)
        if kwargs.get("name") != LOCAL_STEP:
            return var
        original = var._dense_var_to_tensor
        read: list[Any] = []

        def once(dtype: Any = None, name: Any = None, as_ref: bool = False) -> Any:
            if as_ref or (dtype is not None and dtype != var.dtype.base_dtype):
                return original(dtype=dtype, name=name, as_ref=as_ref)
            if not read:
                read.append(original(dtype=dtype, name=name, as_ref=as_ref))
            return read[0]

        object.__setattr__(var, "_dense_var_to_tensor", once)
        return var

    with tf.compat.v1.variable_creator_scope(creator):
        yield
