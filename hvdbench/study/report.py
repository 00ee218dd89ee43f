"""The study's table: one row per (mode, ranks), with the run-to-run spread visible.

Definitions (all pure arithmetic on records, unit-tested):

* total images/sec: each run's figure measured across ranks (global images over the slowest
  rank's time); the row shows the median over repeats and the min..max spread;
* per-device images/sec: the median over repeats; its 95% CI is the Student-t interval of
  the repeats' values when there are two or more repeats (run-to-run noise; centred on their
  mean, cut at 0), else the run's own interval over its step times (step-to-step noise), as
  ``ci_source`` says. With two repeats t = 12.7: use three or more for a useful interval;
* scaling efficiency: per-device images/sec at N over per-device images/sec at the smallest
  N measured for the same mode (1.0 is perfect weak scaling);
* step time: the median over repeats of each run's median step time.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from hvdbench.components import metrics
from hvdbench.errors import UsageError
from hvdbench.study import records


@dataclass(frozen=True)
class Row:
    mode: str
    ranks: int
    repeats: int  # complete runs
    failed: int
    incomplete: int
    per_device_batch_size: int | None
    global_batch_size: int | None
    total_images_per_sec: float | None  # median over repeats
    total_images_per_sec_min: float | None
    total_images_per_sec_max: float | None
    spread_pct: float | None  # (max - min) / median
    per_device_images_per_sec: float | None  # median over repeats
    per_device_ci95_lo: float | None
    per_device_ci95_hi: float | None
    ci_source: str
    scaling_efficiency: float | None
    step_time_median_ms: float | None


def _group(
    recs: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, int], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in records.benchmarks(list(recs)):
        groups.setdefault((str(r.get("mode")), records.num_ranks(r)), []).append(r)
    return groups


def summarize(recs: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Rows sorted by mode, then ranks; efficiency relative to each mode's smallest N."""
    rows: list[Row] = []
    for (mode, ranks), group in sorted(_group(recs).items()):
        complete = [r for r in group if r.get("status") == "complete" and r.get("totals")]
        failed = sum(1 for r in group if r.get("status") == "failed")
        incomplete = sum(1 for r in group if r.get("status") == "incomplete")
        if not complete:
            rows.append(
                Row(
                    mode,
                    ranks,
                    0,
                    failed,
                    incomplete,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "",
                    None,
                    None,
                )  # fmt: skip
            )
            continue
        totals = [r["totals"] for r in complete]
        total = [float(t["total_images_per_sec"]) for t in totals]
        per_dev = [float(t["per_device_images_per_sec"]) for t in totals]
        med_total = statistics.median(total)
        med_dev = statistics.median(per_dev)
        if len(per_dev) >= 2:
            mean, hw = metrics.mean_ci95(per_dev)
            lo, hi, source = max(0.0, mean - hw), mean + hw, "repeats"  # a rate is >= 0
        else:
            lo, hi = (float(x) for x in totals[0]["per_device_images_per_sec_ci95"])
            source = "steps"
        rows.append(
            Row(
                mode=mode,
                ranks=ranks,
                repeats=len(complete),
                failed=failed,
                incomplete=incomplete,
                per_device_batch_size=int(totals[0]["per_device_batch_size"]),
                global_batch_size=int(totals[0]["global_batch_size"]),
                total_images_per_sec=med_total,
                total_images_per_sec_min=min(total),
                total_images_per_sec_max=max(total),
                spread_pct=100.0 * (max(total) - min(total)) / med_total if med_total else None,
                per_device_images_per_sec=med_dev,
                per_device_ci95_lo=lo,
                per_device_ci95_hi=hi,
                ci_source=source,
                scaling_efficiency=None,
                step_time_median_ms=1000.0
                * statistics.median(float(t["step_time_median"]) for t in totals),
            )
        )
    return with_efficiency(rows)


def with_efficiency(rows: Sequence[Row]) -> list[Row]:
    """Fill scaling efficiency: per-device rate over the same mode's smallest-N rate."""
    base: dict[str, float] = {}
    for r in sorted(rows, key=lambda r: r.ranks):
        if r.per_device_images_per_sec and r.mode not in base:
            base[r.mode] = r.per_device_images_per_sec
    out = []
    for r in rows:
        eff = (
            r.per_device_images_per_sec / base[r.mode]
            if r.per_device_images_per_sec and r.mode in base
            else None
        )
        out.append(Row(**{**asdict(r), "scaling_efficiency": eff}))
    return out


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def markdown(rows: Sequence[Row]) -> str:
    """The table users read in the terminal (GitHub-flavoured Markdown)."""
    head = (
        "| mode | ranks | global batch | runs | total img/s (median) | spread min..max |"
        " per-device img/s | 95% CI | efficiency | step time (ms) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        runs = f"{r.repeats}"
        if r.failed:
            runs += f" (+{r.failed} failed)"
        if r.incomplete:
            runs += f" (+{r.incomplete} incomplete)"
        spread = (
            f"{_f(r.total_images_per_sec_min, '.1f')}..{_f(r.total_images_per_sec_max, '.1f')}"
            f" ({_f(r.spread_pct, '.1f')}%)"
            if r.repeats
            else "—"
        )
        ci = (
            f"{_f(r.per_device_ci95_lo, '.1f')}..{_f(r.per_device_ci95_hi, '.1f')} ({r.ci_source})"
            if r.repeats
            else "—"
        )
        lines.append(
            f"| {r.mode} | {r.ranks} | {r.global_batch_size or '—'} | {runs} |"
            f" {_f(r.total_images_per_sec, '.1f')} | {spread} |"
            f" {_f(r.per_device_images_per_sec, '.1f')} | {ci} |"
            f" {_f(r.scaling_efficiency, '.3f')} | {_f(r.step_time_median_ms, '.2f')} |"
        )
    return "\n".join(lines)


def failures(recs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per failed or incomplete run, so that none is dropped silently."""
    out = []
    for r in records.benchmarks(recs):
        status = r.get("status")
        if status == "failed":
            out.append(f"- failed: {r.get('mode')} n={records.num_ranks(r)}: {r.get('error')}")
        elif status == "incomplete":
            stop = r.get("stop") or {}
            out.append(
                f"- incomplete: {r.get('mode')} n={records.num_ranks(r)}: stopped on "
                f"{stop.get('signal')} after {stop.get('measured_steps_done')} of "
                f"{stop.get('measured_steps_planned')} measured steps"
            )
    return out


def to_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    names = [f.name for f in fields(Row)]
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# Baseline


def parse_tolerance(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05; must be in [0, 1)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise UsageError(f"--tolerance: cannot read {text!r}; expected e.g. 5% or 0.05") from None
    if not 0 <= value < 1:
        raise UsageError(f"--tolerance: must be between 0% and 100%, got {text!r}")
    return value


@dataclass(frozen=True)
class Comparison:
    mode: str
    ranks: int
    baseline: float
    current: float | None
    change_pct: float | None
    regressed: bool


def compare(current: Sequence[Row], baseline: Sequence[Row], tolerance: float) -> list[Comparison]:
    """Median total images/sec of every baseline point against the current study.

    A point regresses when it falls below the baseline by more than ``tolerance``
    (a fraction), or when the baseline has it and the current study has no complete run of it.
    """
    now = {(r.mode, r.ranks): r.total_images_per_sec for r in current}
    out = []
    for b in baseline:
        if b.total_images_per_sec is None:
            continue
        cur = now.get((b.mode, b.ranks))
        if cur is None:
            out.append(Comparison(b.mode, b.ranks, b.total_images_per_sec, None, None, True))
            continue
        change = (cur - b.total_images_per_sec) / b.total_images_per_sec
        out.append(
            Comparison(
                b.mode,
                b.ranks,
                b.total_images_per_sec,
                cur,
                100.0 * change,
                cur < b.total_images_per_sec * (1 - tolerance),
            )
        )
    return out


def comparison_markdown(comps: Sequence[Comparison], tolerance: float) -> str:
    lines = [
        f"Baseline comparison (median total images/sec, tolerance {tolerance * 100:g}%):",
        "| mode | ranks | baseline | current | change | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in comps:
        verdict = "REGRESSION" if c.regressed else "ok"
        cur = _f(c.current, ".1f") if c.current is not None else "missing"
        lines.append(
            f"| {c.mode} | {c.ranks} | {c.baseline:.1f} | {cur} |"
            f" {_f(c.change_pct, '+.1f')}% | {verdict} |"
        )
    return "\n".join(lines)
