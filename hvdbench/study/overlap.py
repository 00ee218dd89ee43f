"""Partial overlap: an event simulation of Horovod's gradient exchange within one step.

Between the two bounds of the scaling model (no overlap ``t_c + T(n)``, perfect overlap
``max(t_c, T(n))``) lies what Horovod does. Each gradient is handed to Horovod's background
thread when the backward pass has produced it (``study/readiness.py`` says when). The
thread works in cycles: at the start of a cycle it takes every gradient that is ready by
then, fuses them into buffers of at most the fusion threshold, and all-reduces the buffers
one after the other over the one link; the next cycle starts ``cycle_time`` after the
previous one started, or when its all-reduces end if they took longer. Each fused buffer is
one ring all-reduce and pays its own latency term: ``ring_time(n, fused bytes)``. The step
ends when both the compute and the last all-reduce have ended (the optimizer needs every
averaged gradient before the next step's forward pass).

Each cycle starts with a negotiation: the ranks agree on which tensors are ready everywhere
through a small all-reduce of bit vectors (Horovod's controller does this every cycle,
response cache or not), which costs the latency terms of an all-reduce of nothing,
``ring_time(n, 0) = 2(n-1)α``, and delays the cycle's all-reduces by as much. An idle
cycle negotiates too, so cycles come at most every ``max(cycle_time, 2(n-1)α)``.

Not modelled: stragglers, and the CPU the background thread itself needs:
on CPU ranks the reduction and the socket traffic compete with TensorFlow's compute for the
same cores, which slows the compute that communication is supposed to hide behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
# Modes whose gradients are all-reduced one by one as the backward pass produces them.
OVERLAPPING_MODES = ("horovod",)


@dataclass(frozen=True)
class Knobs:
    """The Horovod settings that shape the exchange, as a run used them."""

    cycle_s: float = 1e-3  # HOROVOD_CYCLE_TIME (Horovod's default 1 ms)
    fusion_bytes: float = 64 * MIB  # HOROVOD_FUSION_THRESHOLD (default 64 MiB)
    groups: int = 0  # hvd.DistributedGradientTape(num_groups=...); 0: one tensor each

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Knobs:
        """From a record's config: the ``horovod`` section; with ``train.jit_compile`` the
        gradients are averaged by one grouped all-reduce after the compiled backward pass,
        i.e. one group ready at the end."""
        h = cfg.get("horovod") or {}
        groups = int(h.get("num_groups", 0) or 0)
        if (cfg.get("train") or {}).get("jit_compile"):
            groups = 1
        return cls(
            cycle_s=float(h.get("cycle_time_ms", 1.0)) / 1e3,
            fusion_bytes=float(h.get("fusion_threshold_mib", h.get("fusion_threshold_mb", 64.0)))
            * MIB,  # records written before the key was renamed hold _mb (MiB all the same)
            groups=groups,
        )


@dataclass(frozen=True)
class Exchange:
    """The simulated exchange of one step."""

    end_s: float  # when the last all-reduce ends (0 if nothing was sent)
    messages: int  # fused all-reduces, each paying one latency term
    cycles: int  # cycles that sent something


def _packs(sizes: Sequence[float], threshold: float) -> list[float]:
    """Fuse tensors, in the order given, into buffers of at most ``threshold`` bytes; a
    tensor larger than the threshold goes alone."""
    packs: list[float] = []
    current = 0.0
    for s in sizes:
        if current > 0 and current + s > threshold:
            packs.append(current)
            current = 0.0
        current += s
    if current > 0 or not packs:
        packs.append(current)
    return packs


def simulate(
    tensors: Sequence[tuple[float, float]],
    cost: Callable[[float], float],
    cycle_s: float,
    fusion_bytes: float = math.inf,
    negotiate_s: float = 0.0,
) -> Exchange:
    """Exchange ``tensors`` (bytes, ready time in s), ``cost(bytes)`` seconds per fused
    all-reduce. Cycles start at time 0; each first negotiates (``negotiate_s``, also when
    nothing is ready) over the tensors ready at its start, then all-reduces them; the next
    starts ``cycle_s`` after it started, or when it ended if that is later."""
    pending = sorted(tensors, key=lambda t: t[1])
    period = max(cycle_s, negotiate_s)  # of idle cycles
    t, i, end, messages, cycles = 0.0, 0, 0.0, 0, 0
    while i < len(pending):
        ready = pending[i][1]
        if ready > t:  # idle: the first cycle that starts once the next tensor is ready
            waits = (ready - t) / period if period > 0 else math.inf
            grid = t + math.ceil(waits - 1e-9) * period if waits < 1e12 else ready
            t = max(grid, ready)  # max: rounding must not start it before the tensor
        j = i
        while j < len(pending) and pending[j][1] <= t:
            j += 1
        busy = negotiate_s
        for size in _packs([b for b, _ in pending[i:j]], fusion_bytes):
            busy += cost(size)
            messages += 1
        end = t + busy
        cycles += 1
        t = max(t + cycle_s, end)
        i = j
    return Exchange(end, messages, cycles)


def partial_overlap_step(
    t_c: float,
    profile: Sequence[tuple[float, float]],
    cost: Callable[[float], float],
    n: int,
    knobs: Knobs,
) -> tuple[float, Exchange]:
    """Step time with Horovod's exchange overlapping the backward pass: ``profile`` is
    (bytes, ready fraction of ``t_c``) per gradient (already grouped), ``cost`` the
    all-reduce time of a fused buffer at ``n`` ranks. One rank exchanges nothing: t_c."""
    if n <= 1 or not profile:
        return t_c, Exchange(0.0, 0, 0)
    # Each cycle's negotiation is a small all-reduce among the ranks: its latency terms.
    ex = simulate(
        [(b, f * t_c) for b, f in profile], cost, knobs.cycle_s, knobs.fusion_bytes, cost(0.0)
    )
    return max(t_c, ex.end_s), ex


def scaled(profile: Sequence[tuple[float, float]], total_bytes: float) -> list[tuple[float, float]]:
    """The profile with its bytes rescaled to add up to ``total_bytes`` (e.g. halved by
    fp16 compression, or a ``--gradient-bytes`` override); the timing is the model's."""
    have = sum(b for b, _ in profile)
    if have <= 0:
        return [(0.0, f) for _, f in profile]
    return [(b * total_bytes / have, f) for b, f in profile]


def describe(mode: str, profile: Sequence[tuple[float, float]], knobs: Knobs) -> str:
    """One line on the partial-overlap inputs, printed before the table."""
    total = sum(b for b, _ in profile) or 1.0
    first = min((f for _, f in profile), default=1.0)
    mean = sum(b * f for b, f in profile) / total
    how = f"in {knobs.groups} group(s)" if knobs.groups > 0 else "one tensor per variable"
    return (
        f"Partial overlap ({mode}): {len(profile)} gradients, {how}; the first ready at "
        f"{first * 100:.0f}% of compute, the bytes on average at {mean * 100:.0f}%; cycle "
        f"{knobs.cycle_s * 1e3:g} ms, fusion threshold "
        f"{knobs.fusion_bytes / MIB:g} MiB"
    )
