"""Report arithmetic on hand-made records: medians, spread, CI, efficiency, CSV, baseline."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from hvdbench.errors import UsageError
from hvdbench.study import records, report


def rec(mode: str, n: int, total: float, per_device: float, step: float,
        status: str = "complete", ci: tuple[float, float] = (0.0, 0.0)) -> dict[str, Any]:  # fmt: skip
    return {
        "schema_version": 1,
        "status": status,
        "mode": mode,
        "totals": {
            "num_ranks": n,
            "per_device_batch_size": 32,
            "global_batch_size": 32 * n,
            "total_images_per_sec": total,
            "per_device_images_per_sec": per_device,
            "per_device_images_per_sec_ci95": list(ci),
            "step_time_median": step,
        },
    }


def study() -> list[dict[str, Any]]:
    return [
        rec("horovod", 1, 100.0, 100.0, 0.32, ci=(95.0, 105.0)),
        rec("horovod", 2, 180.0, 90.0, 0.36),
        rec("horovod", 2, 190.0, 95.0, 0.34),
        rec("horovod", 2, 170.0, 85.0, 0.38),
        rec("horovod", 4, 0.0, 0.0, 0.0, status="failed") | {"totals": None, "ranks": 4,
                                                             "error": "exit code 1"},
        rec("ps", 2, 120.0, 60.0, 0.5),
        rec("ps", 4, 200.0, 50.0, 0.6),
    ]  # fmt: skip


def test_rows_medians_spread_ci_and_efficiency() -> None:
    rows = {(r.mode, r.ranks): r for r in report.summarize(study())}
    one, two = rows[("horovod", 1)], rows[("horovod", 2)]
    assert one.repeats == 1 and one.ci_source == "steps"
    assert (one.per_device_ci95_lo, one.per_device_ci95_hi) == (95.0, 105.0)
    assert one.scaling_efficiency == 1.0
    assert two.repeats == 3
    assert two.total_images_per_sec == 180.0
    assert (two.total_images_per_sec_min, two.total_images_per_sec_max) == (170.0, 190.0)
    assert two.spread_pct == pytest.approx(100 * 20 / 180)
    assert two.per_device_images_per_sec == 90.0
    assert two.scaling_efficiency == pytest.approx(0.9)
    # t(0.975, 2) = 4.303; stdev(90, 95, 85) = 5
    hw = 4.303 * 5 / math.sqrt(3)
    assert two.ci_source == "repeats"
    assert two.per_device_ci95_lo == pytest.approx(90 - hw)
    assert two.per_device_ci95_hi == pytest.approx(90 + hw)
    assert two.step_time_median_ms == pytest.approx(360.0)
    assert two.global_batch_size == 64
    failed = rows[("horovod", 4)]
    assert failed.repeats == 0 and failed.failed == 1 and failed.scaling_efficiency is None
    # each mode's efficiency is relative to its own smallest N
    assert rows[("ps", 2)].scaling_efficiency == 1.0
    assert rows[("ps", 4)].scaling_efficiency == pytest.approx(50 / 60)


def test_markdown_and_failures_list_every_point() -> None:
    recs = study()
    md = report.markdown(report.summarize(recs))
    assert md.splitlines()[0].startswith("| mode | ranks |")
    assert "| horovod | 2 | 64 | 3 | 180.0 | 170.0..190.0 (11.1%) | 90.0 |" in md
    assert "| horovod | 4 | — | 0 (+1 failed) |" in md
    assert report.failures(recs) == ["- failed: horovod n=4: exit code 1"]


def test_csv_round_trips_the_numbers() -> None:
    rows = report.summarize(study())
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rows))))
    assert len(parsed) == len(rows)
    by = {(p["mode"], int(p["ranks"])): p for p in parsed}
    assert float(by[("horovod", 2)]["scaling_efficiency"]) == pytest.approx(0.9)
    assert by[("horovod", 4)]["total_images_per_sec"] == ""


@pytest.mark.parametrize(
    "text, value", [("5%", 0.05), ("0.05", 0.05), ("0", 0.0), ("12.5%", 0.125)]
)
def test_parse_tolerance(text: str, value: float) -> None:
    assert report.parse_tolerance(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5 percent", "-1%", "100%", "1.5"])
def test_parse_tolerance_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="--tolerance"):
        report.parse_tolerance(text)


def test_baseline_comparison() -> None:
    base = report.summarize([rec("horovod", 1, 100.0, 100.0, 0.3), rec("horovod", 2, 200.0, 100.0, 0.3),
                             rec("horovod", 4, 400.0, 100.0, 0.3)])  # fmt: skip
    now = report.summarize(
        [rec("horovod", 1, 96.0, 96.0, 0.3), rec("horovod", 2, 189.0, 94.5, 0.3)]
    )
    comps = {c.ranks: c for c in report.compare(now, base, 0.05)}
    assert not comps[1].regressed and comps[1].change_pct == pytest.approx(-4.0)
    assert comps[2].regressed and comps[2].change_pct == pytest.approx(-5.5)
    assert comps[4].regressed and comps[4].current is None  # missing from the current study
    assert not any(c.regressed for c in report.compare(base, base, 0.0))
    md = report.comparison_markdown(list(comps.values()), 0.05)
    assert "| horovod | 4 | 400.0 | missing |" in md and "REGRESSION" in md


def test_load_skips_foreign_json(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(rec("horovod", 1, 1.0, 1.0, 1.0)))
    (tmp_path / "b.json").write_text("{not json")
    (tmp_path / "c.json").write_text(json.dumps({"hello": 1}))
    loaded = records.load(tmp_path)
    assert len(loaded) == 1 and loaded[0]["_path"].endswith("a.json")
    with pytest.raises(UsageError):
        records.load(tmp_path / "missing")
    assert statistics.median([1, 2, 3]) == 2


def test_report_and_predict_bad_input_exit_2(tmp_path: Path) -> None:
    from tests.conftest import hvdbench

    (tmp_path / "r.json").write_text(json.dumps(rec("horovod", 1, 10.0, 10.0, 0.1)))
    cases = [
        (["report", str(tmp_path / "nope")], "does not exist"),
        (["report", str(tmp_path), "--tolerance", "lots"], "--tolerance"),
        (["predict", str(tmp_path)], "no all-reduce record"),
        (["predict", str(tmp_path), "--ranks", "0"], "--ranks"),
        (["allreduce", "--sizes", "1XB..2MiB"], "--sizes"),
        (["allreduce", "--impl", "nccl"], "--impl"),
    ]
    for args, message in cases:
        r = hvdbench(*args, timeout=60)
        assert r.returncode == 2, (args, r.output)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
