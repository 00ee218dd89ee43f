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

``SyncReplicasOptimizer`` gives each variable its own accumulator on the variable's task:
65 accumulations on the ps per worker and step, in series, and 65 takes and splits in the
chief's update, all in the synchronous step's tail. Packed, :func:`gradients_to_accumulators`
gives it one :class:`PackedGradient` per ps task instead, so that a task's share of the
gradients is accumulated and taken whole, and :class:`SplitApply` splits the average back
into the variables' gradients on that task, for the optimizer. Each accumulator takes the
worker's local step, read anew for each; :func:`one_local_step_read` makes them one read,
which crosses once per ps task. Batch norm's moving-average updates are packed by
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
    flat = _flatten(tensors)
    with tf.device(device):
        return _unflatten(flat, shapes, after)


def _flatten(tensors: list[Any]) -> Any:
    """``tensors`` flattened and concatenated, in the caller's scope."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], 0)


def _unflatten(flat: Any, shapes: list[Any], after: Sequence[Any] = ()) -> list[Any]:
    """:func:`_flatten`'s tensors of ``shapes`` back from ``flat``, in the caller's scope;
    the split after ``after``."""
    sizes = [int(tf.TensorShape(s).num_elements()) for s in shapes]
    with tf.control_dependencies(after):
        parts = tf.split(flat, sizes) if len(sizes) > 1 or after else [flat]
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
    for device, members, wait in _gradient_groups(pairs, after):
        idx = [i for i, _ in members]
        moved = move([g for _, g in members], [pairs[i][1].shape for i in idx], device, wait)
        for i, g in zip(idx, moved):
            out[i] = (g, pairs[i][1])
    return out


def _gradient_groups(
    pairs: list[tuple[Any, Any]], after: Sequence[Any]
) -> list[tuple[str, list[tuple[int, Any]], list[Any]]]:
    """(ps device, [(index, gradient), ...], what that task's share must wait for) for
    each ps task and dtype of the pairs' dense gradients, in order."""
    dense = [
        (i, g, (v.device, g.dtype))
        for i, (g, v) in enumerate(pairs)
        if isinstance(g, tf.Tensor) and g.shape.is_fully_defined()
    ]
    groups = _groups(dense)
    devices = {device for device, _ in groups}
    elsewhere = [t for t in after if t.device not in devices]
    return [
        (device, members, [t for t in after if t.device == device] + elsewhere)
        for (device, _), members in groups.items()
    ]


class PackedGradient:
    """What ``SyncReplicasOptimizer`` needs of a variable to accumulate its gradient (a
    device, a shape and a name), for one ps task's share of the gradients, flattened and
    concatenated in ``variables``' order: it makes one accumulator for them all, on their
    task, and hands their average to :class:`SplitApply`."""

    def __init__(self, variables: list[Any], index: int) -> None:
        self.variables = variables
        self.device = variables[0].device
        self.name = f"packed_gradients_{index}"
        self.shape = tf.TensorShape([sum(int(v.shape.num_elements()) for v in variables)])

    def get_shape(self) -> Any:
        return self.shape

    def split(self, flat: Any) -> list[tuple[Any, Any]]:
        """(gradient, variable) pairs of ``flat``, split and reshaped on the task."""
        with tf.device(self.device):
            parts = _unflatten(flat, [v.shape for v in self.variables])
        return list(zip(parts, self.variables))


def gradients_to_accumulators(
    pairs: list[tuple[Any, Any]], after: Sequence[Any] = ()
) -> list[tuple[Any, Any]]:
    """:func:`gradients_to_ps` for ``SyncReplicasOptimizer``: one (flat gradient,
    :class:`PackedGradient`) pair per ps task and dtype, whose gradient crosses in one
    transfer and is accumulated whole, and the pairs that cannot be packed as they are.
    Its optimizer must be wrapped in :class:`SplitApply`. ``after`` as in
    :func:`gradients_to_ps`: each task's accumulation waits for that task's ops, there."""
    groups = _gradient_groups(pairs, after)
    packed = {i for _, members, _ in groups for i, _ in members}
    out = [pair for i, pair in enumerate(pairs) if i not in packed]
    for index, (device, members, wait) in enumerate(groups):
        proxy = PackedGradient([pairs[i][1] for i, _ in members], index)
        flat = _flatten([g for _, g in members])
        if wait:
            with tf.device(device), tf.control_dependencies(wait):
                flat = tf.identity(flat)
        out.append((flat, proxy))
    return out


class SplitApply:
    """The optimizer inside ``SyncReplicasOptimizer`` when its gradients are packed
    (:func:`gradients_to_accumulators`): each :class:`PackedGradient`'s average is split
    back into its variables' gradients, then ``opt`` applies them all as it would have."""

    def __init__(self, opt: Any) -> None:
        self._opt = opt

    def apply_gradients(
        self, grads_and_vars: Any, global_step: Any = None, name: Any = None
    ) -> Any:
        pairs: list[tuple[Any, Any]] = []
        for g, v in grads_and_vars:
            pairs.extend(v.split(g) if isinstance(v, PackedGradient) else [(g, v)])
        return self._opt.apply_gradients(pairs, global_step=global_step, name=name)

    def __getattr__(self, name: str) -> Any:  # compute_gradients, get_slot, variables, ...
        return getattr(self._opt, name)


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
