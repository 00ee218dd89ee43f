"""Placing variables on ps tasks: greedy by byte size, least-loaded task first.

``tf.contrib``'s ``GreedyLoadBalancingStrategy`` is gone from TensorFlow 2, so this is our
own. ``tf.compat.v1.train.replica_device_setter`` calls the strategy once per variable op,
in creation order; each variable goes to the ps task holding the fewest bytes so far (the
lowest index on ties). The size comes from the op's ``shape`` and ``dtype`` attributes,
so the same arithmetic runs without TensorFlow in :func:`assign_greedy`.

A model dominated by one tensor (``mnist_mlp``: 78,400 of its 79,510 parameters in one
kernel) cannot be balanced this way: a variable is never split across tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# tensorflow/core/framework/types.proto: DataType enum value -> bytes per element.
_DTYPE_BYTES = {
    1: 4,  # float
    2: 8,  # double
    3: 4,  # int32
    4: 1,  # uint8
    5: 2,  # int16
    6: 1,  # int8
    9: 8,  # int64
    10: 1,  # bool
    14: 2,  # bfloat16
    17: 2,  # uint16
    19: 2,  # half
    22: 4,  # uint32
    23: 8,  # uint64
}
_UNKNOWN_BYTES = 4


def num_bytes(shape: Sequence[int], dtype_enum: int) -> int:
    """Bytes of a tensor; unknown dimensions count as 1, at least one element."""
    elements = 1
    for d in shape:
        elements *= max(int(d), 1)
    return elements * _DTYPE_BYTES.get(dtype_enum % 100, _UNKNOWN_BYTES)  # %100: ref types


def assign_greedy(sizes: Iterable[int], num_tasks: int) -> list[int]:
    """The task of each size, in order: the least-loaded task so far, lowest index on ties."""
    loads = [0] * num_tasks
    out = []
    for size in sizes:
        task = min(range(num_tasks), key=lambda t: (loads[t], t))
        loads[task] += size
        out.append(task)
    return out


def loads_by_task(sizes: Sequence[int], tasks: Sequence[int], num_tasks: int) -> list[int]:
    loads = [0] * num_tasks
    for size, task in zip(sizes, tasks, strict=True):
        loads[task] += size
    return loads


def op_bytes(op: Any) -> int:
    """Bytes of the variable an op creates, from its ``shape`` and ``dtype`` attributes."""
    attr = op.node_def.attr
    shape = [d.size for d in attr["shape"].shape.dim] if "shape" in attr else []
    dtype = attr["dtype"].type if "dtype" in attr else 1
    return num_bytes(shape, dtype)


class GreedyByteSize:
    """A ``ps_strategy`` for ``replica_device_setter``: a callable from op to ps task."""

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = num_tasks
        self.loads = [0] * num_tasks
        self.placed: list[tuple[str, int, int]] = []  # (op name, bytes, task)

    def __call__(self, op: Any) -> int:
        size = op_bytes(op)
        task = min(range(self.num_tasks), key=lambda t: (self.loads[t], t))
        self.loads[task] += size
        self.placed.append((op.name, size, task))
        return task

    def shares(self) -> list[float]:
        """Each task's fraction of the bytes placed so far."""
        total = sum(self.loads) or 1
        return [load / total for load in self.loads]
