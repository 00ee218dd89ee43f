"""Step timing arithmetic: progress lines, confidence intervals, cross-rank totals.

Pure Python on lists of step times, so every formula is unit-tested.

The headline figure is measured across ranks: the images of all ranks divided by the time
of the slowest rank. It is not rank 0's rate times N, which hides stragglers; the sum of the
per-rank rates is stored beside it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Two-sided 95% Student t quantiles, t(0.975, df), df = 1..30; beyond 30 the normal 1.96
# is within 2%.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_critical_95(df: int) -> float:
    """The two-sided 95% Student t quantile for ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two samples")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (0 for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, t_critical_95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def perf_timing(batch_size: int, step_times: Sequence[float]) -> tuple[float, float, float]:
    """tf_cnn_benchmarks' (images/sec, +/- standard error, jitter) of a series of steps.

    images/sec is batch / mean step time; the uncertainty is the standard error of the
    per-step rates; jitter is 1.4826 * the median absolute deviation of those rates.
    """
    speeds = [batch_size / t for t in step_times]
    mean = batch_size / statistics.fmean(step_times)
    if len(speeds) < 2:
        return mean, 0.0, 0.0
    uncertainty = statistics.pstdev(speeds) / math.sqrt(len(speeds))
    median = statistics.median(speeds)
    jitter = 1.4826 * statistics.median(abs(s - median) for s in speeds)
    return mean, uncertainty, jitter


def progress_header() -> str:
    return "Step\tImg/sec\ttotal_loss"


def progress_line(step: int, batch_size: int, step_times: Sequence[float], loss: float) -> str:
    """``N\\timages/sec: X +/- Y (jitter = Z)\\tloss``, as tf_cnn_benchmarks prints it."""
    mean, unc, jitter = perf_timing(batch_size, step_times)
    return f"{step}\timages/sec: {mean:.1f} +/- {unc:.1f} (jitter = {jitter:.1f})\t{loss:.3f}"


def should_display(step: int, display_every: int) -> bool:
    """Print at the first measured step and every ``display_every`` steps (1-based)."""
    return step == 1 or step % display_every == 0


JOB = "job steps (slowest rank of each step)"
POOLED = "pooled rank steps"


def job_step_times(series: Sequence[Sequence[float]]) -> list[float]:
    """The step times of a job whose ranks run in lockstep: step i lasts as long as its
    slowest rank took (over the steps every rank has)."""
    n = min(len(s) for s in series)
    return [max(s[i] for s in series) for i in range(n)]


@dataclass(frozen=True)
class RankMeasurement:
    """What one measured process saw: its own step times and the wall time of the measured
    steps, for ``devices`` compute devices of ``batch_size`` images each (more than one in
    the local-device modes, whose one process drives them all)."""

    rank: int
    host: str
    batch_size: int
    step_times: tuple[float, ...]
    measured_seconds: float
    devices: int = 1

    @property
    def images(self) -> int:
        return self.batch_size * self.devices * len(self.step_times)

    @property
    def images_per_sec(self) -> float:
        return self.images / self.measured_seconds if self.measured_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["step_times"] = list(self.step_times)
        d["images_per_sec"] = self.images_per_sec
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankMeasurement:
        return cls(
            d["rank"],
            d["host"],
            d["batch_size"],
            tuple(d["step_times"]),
            d["measured_seconds"],
            int(d.get("devices", 1)),
        )


@dataclass(frozen=True)
class Totals:
    """The run's figures, aggregated over the compute ranks."""

    num_ranks: int
    per_device_batch_size: int
    global_batch_size: int
    num_steps: int
    total_images_per_sec: float
    sum_of_rank_images_per_sec: float
    per_device_images_per_sec: float
    per_device_images_per_sec_ci95: tuple[float, float]
    step_time_mean: float
    step_time_median: float
    step_time_ci95: float
    slowest_rank: int
    slowest_rank_seconds: float
    step_times_from: str = POOLED
    """Which step times the mean, median and interval are of: ``job`` (the slowest rank of
    each step, for ranks in lockstep) or ``pooled`` (every rank's steps, asynchronous)."""
    measured_processes: int = 0

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["per_device_images_per_sec_ci95"] = list(self.per_device_images_per_sec_ci95)
        return d


def aggregate(ranks: Sequence[RankMeasurement], lockstep: bool = False) -> Totals:
    """Cross-rank totals. The total divides all images by the slowest rank's measured time.

    Per-device images/sec is batch / mean step time; its 95% interval comes from the
    interval of the mean step time. With ``lockstep`` (synchronous modes) the step times
    are the job's, the slowest rank of each step (:func:`job_step_times`): ranks that wait
    for each other at every step are not independent samples, and pooling them would
    narrow the interval by about the square root of the ranks. Otherwise (asynchronous
    ranks) every rank's steps are pooled. A process driving several devices is one
    measurement (``devices``), never counted once per device.
    """
    if not ranks:
        raise ValueError("no measurements to aggregate")
    slowest = max(ranks, key=lambda r: r.measured_seconds)
    batch = ranks[0].batch_size
    images = sum(r.images for r in ranks)
    lockstep = lockstep and len(ranks) > 1
    if lockstep:
        times = job_step_times([r.step_times for r in ranks])
    else:
        times = [t for r in ranks for t in r.step_times]
    mean_t, hw = mean_ci95(times)
    devices = sum(r.devices for r in ranks)
    per_device = batch / mean_t
    lo = batch / (mean_t + hw)
    hi = batch / (mean_t - hw) if mean_t > hw else math.inf
    return Totals(
        num_ranks=devices,
        per_device_batch_size=batch,
        global_batch_size=batch * devices,
        num_steps=len(ranks[0].step_times),
        total_images_per_sec=images / slowest.measured_seconds,
        sum_of_rank_images_per_sec=sum(r.images_per_sec for r in ranks),
        per_device_images_per_sec=per_device,
        per_device_images_per_sec_ci95=(lo, hi),
        step_time_mean=mean_t,
        step_time_median=statistics.median(times),
        step_time_ci95=hw,
        slowest_rank=slowest.rank,
        slowest_rank_seconds=slowest.measured_seconds,
        step_times_from=JOB if lockstep else POOLED,
        measured_processes=len(ranks),
    )


def horovod_lines(totals: Totals, model: str, device: str) -> list[str]:
    """The closing lines of Horovod's synthetic benchmark, so that checks written for it
    (ReFrame's hpctestlib, site scripts) parse hvdbench unchanged. ``device`` is CPU or
    GPU. Both rates are hvdbench's measured ones (the total over the slowest rank, not
    per-device x N); the ``+-`` is the 95% half-width of the mean step time, relative."""
    rel = totals.step_time_ci95 / totals.step_time_mean if totals.step_time_mean else 0.0
    per, total, n = totals.per_device_images_per_sec, totals.total_images_per_sec, totals.num_ranks
    return [
        f"Model: {model}",
        f"Batch size: {totals.per_device_batch_size}",
        f"Number of {device}s: {n}",
        f"Img/sec per {device}: {per:.2f} +-{per * rel:.2f}",
        f"Total img/sec on {n} {device}(s): {total:.2f} +-{total * rel:.2f}",
    ]


def summary_lines(totals: Totals) -> list[str]:
    """The closing block; its ``total images/sec:`` line is what log parsers look for."""
    lo, hi = totals.per_device_images_per_sec_ci95
    rule = "-" * 64
    return [
        rule,
        f"total images/sec: {totals.total_images_per_sec:.2f}",
        rule,
        f"per-device images/sec: {totals.per_device_images_per_sec:.2f} "
        f"(95% CI {lo:.2f} .. {hi:.2f}) over {totals.num_ranks} rank(s)",
        f"sum of per-rank images/sec: {totals.sum_of_rank_images_per_sec:.2f}; "
        f"slowest rank {totals.slowest_rank}: {totals.slowest_rank_seconds:.3f} s",
        f"step time: mean {totals.step_time_mean * 1000:.1f} ms, "
        f"median {totals.step_time_median * 1000:.1f} ms of {totals.step_times_from}; "
        f"global batch {totals.global_batch_size}",
    ]


def applied_rates(
    computed_images_per_sec: float,
    global_steps: int,
    replicas_to_aggregate: int,
    gradients_computed: int,
) -> dict[str, float | int]:
    """With backup workers, the rate of images whose gradients were applied, beside the
    rate of images computed. Each global step applies ``replicas_to_aggregate`` gradients
    and drops the rest, so over the run the applied share of the gradients computed
    (every worker's steps, warm-up and drain included) is
    ``global_steps * replicas_to_aggregate / gradients_computed``."""
    applied = global_steps * replicas_to_aggregate
    share = min(1.0, applied / gradients_computed) if gradients_computed > 0 else 0.0
    return {
        "replicas_to_aggregate": replicas_to_aggregate,
        "global_steps": global_steps,
        "gradients_computed": gradients_computed,
        "gradients_applied": applied,
        "applied_share": share,
        "computed_images_per_sec": computed_images_per_sec,
        "applied_images_per_sec": computed_images_per_sec * share,
    }


def applied_line(rates: dict[str, float | int]) -> str:
    return (
        f"applied images/sec: {rates['applied_images_per_sec']:.2f} of "
        f"{rates['computed_images_per_sec']:.2f} computed ({rates['gradients_applied']} of "
        f"{rates['gradients_computed']} gradients applied; backup workers)"
    )
