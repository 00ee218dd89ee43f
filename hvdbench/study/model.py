"""A cost model of a weak-scaling step, to look past the ranks the cluster has.

See docs/scaling_model.md for the derivation and the assumptions. In short, with S the
gradient bytes exchanged per step and n compute ranks:

    compute   t_c          from the smallest measured run (its communication taken out)
    ring      T_ar(n)  = 2(n-1)·α + 2(n-1)/n · S/B            (0 for n = 1)
    ps        T_ps(n)  = 2·α + n·S/(p·B)                       (p parameter-server tasks)
    step      t_c + T   without overlap;   max(t_c, T)  with perfect overlap;
              partial overlap: Horovod's exchange simulated against the backward pass
              (study/overlap.py), gradients ready when the model's layers say (study/readiness.py)
    efficiency(n) = step(n0) / step(n)      (per-device rate relative to the smallest n0)

α (latency per message hop) and B (link bandwidth) are fitted by least squares to the
times of ``hvdbench allreduce`` records, which follow T_ar exactly.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hvdbench import config, models
from hvdbench.errors import UsageError
from hvdbench.study import overlap, readiness

RING = "ring_allreduce"
PS = "parameter_server"
# Communication pattern of each mode; a mode not listed is taken as ring all-reduce unless
# its name says parameter server.
PATTERNS = {
    "horovod": RING,
    "collective_all_reduce": RING,
    "parameter_server": PS,
}


def pattern(mode: str) -> str:
    if mode in PATTERNS:
        return PATTERNS[mode]
    return PS if "parameter_server" in mode or mode.startswith("ps") else RING


@dataclass(frozen=True)
class LinkFit:
    """Fitted network parameters: per-hop latency α (s) and bandwidth B (bytes/s)."""

    alpha_s: float
    bandwidth_Bps: float
    num_samples: int
    rms_relative_error: float


def ring_time(n: int, size_bytes: float, alpha_s: float, bandwidth_Bps: float) -> float:
    """Ring all-reduce of ``size_bytes`` over ``n`` ranks: 2(n-1)α + 2(n-1)/n · S/B."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * alpha_s + 2 * (n - 1) / n * size_bytes / bandwidth_Bps


def ps_time(n: int, size_bytes: float, num_ps: int, alpha_s: float, bandwidth_Bps: float) -> float:
    """Push gradients and pull variables through ``num_ps`` tasks: the ps links carry
    n·S/p each way (full duplex) per step, plus one round trip of latency."""
    return 2 * alpha_s + n * size_bytes / (max(num_ps, 1) * bandwidth_Bps)


def fit_ring(samples: Iterable[tuple[int, float, float]]) -> LinkFit:
    """Least squares fit of (n, size_bytes, seconds) samples to T_ar: unknowns α and 1/B.

    A negative latency (noise on a fast network) is clamped to 0 and the bandwidth refitted.
    """
    import numpy as np

    rows = [(n, s, t) for n, s, t in samples if n > 1 and t > 0]
    if len(rows) < 2:
        raise UsageError(
            "predict: the all-reduce records need at least two sizes at n > 1 ranks to fit α and B"
        )
    x = np.array([[2 * (n - 1), 2 * (n - 1) / n * s] for n, s, _ in rows], dtype=float)
    y = np.array([t for _, _, t in rows], dtype=float)
    # Relative least squares: small messages (latency) count as much as large ones.
    w = 1.0 / y
    coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    alpha, inv_b = float(coef[0]), float(coef[1])
    if alpha < 0:
        alpha = 0.0
        inv_b = float(np.sum(x[:, 1] * y * w**2) / np.sum(x[:, 1] ** 2 * w**2))
    if inv_b <= 0:
        raise UsageError("predict: the all-reduce times do not grow with size; cannot fit B")
    pred = x @ np.array([alpha, inv_b])
    rms = float(np.sqrt(np.mean(((pred - y) / y) ** 2)))
    return LinkFit(alpha, 1.0 / inv_b, len(rows), rms)


def allreduce_samples(
    recs: Iterable[Mapping[str, Any]], impl: str = "horovod"
) -> list[tuple[int, float, float]]:
    """(n, size, time) from ``hvdbench allreduce`` records, for one implementation
    (falling back to any implementation present when ``impl`` is absent)."""
    recs = [r for r in recs if r.get("kind") == "allreduce"]
    out: list[tuple[int, float, float]] = []
    for want in (impl, None):
        for r in recs:
            n = int(r["world_size"])
            for res in r.get("results", []):
                if want is None or res["implementation"] == want:
                    out.append((n, float(res["size_bytes"]), float(res["time_s"])))
        if out:
            break
    return out


@dataclass(frozen=True)
class Prediction:
    mode: str
    ranks: int
    comm_s: float
    step_no_overlap_s: float
    step_overlap_s: float
    efficiency_no_overlap: float
    efficiency_overlap: float
    measured_efficiency: float | None
    measured_step_s: float | None
    step_partial_s: float | None = None  # partial overlap (Horovod only, with a profile)
    efficiency_partial: float | None = None
    messages: int = 0  # fused all-reduces per step in the partial-overlap simulation


def comm_time(mode: str, n: int, size_bytes: float, fit: LinkFit, num_ps: int = 1) -> float:
    if pattern(mode) == PS:
        return ps_time(n, size_bytes, num_ps, fit.alpha_s, fit.bandwidth_Bps)
    return ring_time(n, size_bytes, fit.alpha_s, fit.bandwidth_Bps)


def compute_time(step_s: float, comm_s: float) -> float:
    """Compute time of a step: the measured step minus its modelled communication; if the
    model says the network took longer than the whole step, the step is taken as compute."""
    t_c = step_s - comm_s
    return t_c if t_c > 0 else step_s


def predict(
    mode: str,
    measured: Mapping[int, tuple[float, float | None]],
    ranks: Sequence[int],
    size_bytes: float,
    fit: LinkFit,
    num_ps: int = 1,
    compute: Mapping[int, float] | None = None,
    profile: Sequence[tuple[float, float]] | None = None,
    knobs: overlap.Knobs | None = None,
) -> list[Prediction]:
    """Predicted efficiency at ``ranks`` and at every measured point.

    ``measured`` maps n to (median step time in s, measured efficiency); the smallest n0 is
    the reference for efficiency and for compute time. With ``compute`` (n -> seconds, from
    n communication-free one-rank runs started together), compute at n is the smallest
    run's scaled by ``compute[n] / compute[n0]``: ranks that share nodes' cores compute more
    slowly as n grows, which is not communication, while what the baseline runs lack (the
    framework's own per-step work) cancels out. Beyond the largest n in ``compute``, its
    slowdown is kept.

    With ``profile`` ((bytes, ready fraction of compute) per gradient, from
    ``readiness.gradient_profile``) and a mode in ``overlap.OVERLAPPING_MODES``, a third
    prediction simulates Horovod's exchange with ``knobs`` against the backward pass; the
    profile's bytes are rescaled to ``size_bytes``.
    """
    if not measured:
        raise UsageError(f"predict: no complete run of mode {mode} in the study")
    n0 = min(measured)
    step0 = measured[n0][0]
    comm0 = comm_time(mode, n0, size_bytes, fit, num_ps)
    t_c = compute_time(step0, comm0)
    if compute:
        known = sorted(compute)

        def baseline(n: int) -> float:
            below = [k for k in known if k <= n]
            return compute[below[-1] if below else known[0]]

        def t_c_at(n: int) -> float:
            return t_c * baseline(n) / baseline(n0)
    else:

        def t_c_at(n: int) -> float:
            return t_c

    ref_no = t_c + comm0
    ref_ov = max(t_c, comm0)
    exchanges: dict[int, tuple[float, overlap.Exchange]] = {}
    if profile and mode in overlap.OVERLAPPING_MODES:
        k = knobs or overlap.Knobs()
        tensors = readiness.grouped(overlap.scaled(profile, size_bytes), k.groups)
        for n in {n0, *ranks, *measured}:
            cost = functools.partial(
                ring_time, n, alpha_s=fit.alpha_s, bandwidth_Bps=fit.bandwidth_Bps
            )
            exchanges[n] = overlap.partial_overlap_step(t_c_at(n), tensors, cost, n, k)
    out = []
    for n in sorted(set(ranks) | set(measured)):
        comm = comm_time(mode, n, size_bytes, fit, num_ps)
        no, ov = t_c_at(n) + comm, max(t_c_at(n), comm)
        pa, ex = exchanges.get(n, (None, None))
        m = measured.get(n)
        out.append(
            Prediction(
                mode,
                n,
                comm,
                no,
                ov,
                ref_no / no,
                ref_ov / ov,
                m[1] if m else None,
                m[0] if m else None,
                pa,
                None if pa is None else exchanges[n0][0] / pa,
                ex.messages if ex else 0,
            )
        )
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(preds: Sequence[Prediction], fit: LinkFit, size_bytes: Mapping[str, float]) -> str:
    """The prediction table; ``size_bytes`` is S per mode."""
    sizes = ", ".join(f"{m} {s:,.0f}" for m, s in sorted(size_bytes.items()))
    lines = [
        f"Fitted from all-reduce records: α = {fit.alpha_s * 1e6:.2f} us, "
        f"B = {fit.bandwidth_Bps / 1e9:.3f} GB/s ({fit.num_samples} samples, "
        f"rms relative error {fit.rms_relative_error * 100:.1f}%)",
        f"Gradient bytes per step S: {sizes}",
        "",
        "| mode | ranks | comm (ms) | step no-overlap (ms) | step overlap (ms) |"
        " step partial (ms) | predicted eff. no-overlap | predicted eff. overlap |"
        " predicted eff. partial | measured eff. | measured step (ms) |",
        "|" + "---|" * 11,
    ]
    for p in preds:
        ms = None if p.measured_step_s is None else p.measured_step_s * 1e3
        pa = None if p.step_partial_s is None else p.step_partial_s * 1e3
        lines.append(
            f"| {p.mode} | {p.ranks} | {p.comm_s * 1e3:.3f} | {p.step_no_overlap_s * 1e3:.2f} |"
            f" {p.step_overlap_s * 1e3:.2f} | {_fmt(pa, '.2f')} |"
            f" {p.efficiency_no_overlap:.3f} | {p.efficiency_overlap:.3f} |"
            f" {_fmt(p.efficiency_partial, '.3f')} | {_fmt(p.measured_efficiency, '.3f')} |"
            f" {_fmt(ms, '.2f')} |"
        )
    return "\n".join(lines)


def num_ps_from_config(cfg: Mapping[str, Any]) -> int:
    """Parameter-server tasks named in a record's config, whatever the section (1 if none)."""
    for section in cfg.values():
        if isinstance(section, Mapping):
            for key in ("num_ps", "ps_tasks", "num_parameter_servers"):
                if isinstance(section.get(key), int) and section[key] > 0:
                    return int(section[key])
    return 1


def gradient_bytes(cfg: Mapping[str, Any]) -> int:
    """Bytes of the gradients one step exchanges: trainable parameters × 4 (float32),
    halved with Horovod's fp16 compression. Builds the model (imports TensorFlow)."""
    model = _build_model(cfg)
    params = sum(int(v.shape.num_elements()) for v in model.trainable_variables)
    return params * _bytes_per_param(cfg)


def gradient_profile(cfg: Mapping[str, Any]) -> list[tuple[int, float]]:
    """The record's model's gradient readiness profile (``readiness.gradient_profile``):
    (bytes, ready fraction of compute) per trainable variable, in backward order; the bytes
    add up to ``gradient_bytes(cfg)``. Builds the model (imports TensorFlow)."""
    return readiness.gradient_profile(_build_model(cfg), _bytes_per_param(cfg))


def _bytes_per_param(cfg: Mapping[str, Any]) -> int:
    return 2 if (cfg.get("horovod") or {}).get("fp16_allreduce") else 4


def _build_model(cfg: Mapping[str, Any]) -> Any:
    c = config.load(None, [f"--model.{k}={v}" for k, v in cfg["model"].items()])
    return models.build(c)


def compute_times(recs_by_n: Mapping[int, Sequence[Mapping[str, Any]]]) -> dict[int, float]:
    """Compute time per step at each n from n one-rank runs started together (and repeats
    of them): the median over the runs of their mean step time. The mean, because ranks
    sharing cores see a long tail of slow steps, and a synchronous step pays for the tail;
    the median over runs, to be robust to one disturbed run."""
    out: dict[int, float] = {}
    for n, recs in recs_by_n.items():
        medians = [
            float(r["totals"]["step_time_mean"])
            for r in recs
            if r.get("status") == "complete" and r.get("totals")
        ]
        if medians:
            out[n] = statistics.median(medians)
    return out
