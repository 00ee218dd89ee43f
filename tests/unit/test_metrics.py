"""Timing arithmetic: tf_cnn_benchmarks' progress figures, CIs and cross-rank totals."""

from __future__ import annotations

import math
import statistics

import pytest

from hvdbench.components import metrics


def test_perf_timing_matches_tf_cnn_benchmarks_definitions():
    times = [0.1, 0.2, 0.1, 0.1]
    speeds = [32 / t for t in times]  # 320, 160, 320, 320
    mean, unc, jitter = metrics.perf_timing(32, times)
    assert mean == pytest.approx(32 / 0.125)  # batch / mean time, not the mean of the speeds
    assert unc == pytest.approx(statistics.pstdev(speeds) / 2)
    assert jitter == pytest.approx(0.0)  # median absolute deviation: three of four equal


def test_single_step_has_no_spread():
    assert metrics.perf_timing(10, [0.5]) == (20.0, 0.0, 0.0)


def test_progress_line_format():
    line = metrics.progress_line(10, 32, [0.1, 0.1], 2.5)
    assert line == "10\timages/sec: 320.0 +/- 0.0 (jitter = 0.0)\t2.500"
    assert metrics.progress_header() == "Step\tImg/sec\ttotal_loss"


@pytest.mark.parametrize(
    "step, shown", [(1, True), (2, False), (10, True), (11, False), (20, True)]
)
def test_display_schedule(step, shown):
    assert metrics.should_display(step, 10) is shown


def test_t_quantiles():
    assert metrics.t_critical_95(1) == 12.706
    assert metrics.t_critical_95(9) == 2.262
    assert metrics.t_critical_95(1000) == 1.96
    with pytest.raises(ValueError):
        metrics.t_critical_95(0)


def test_mean_ci95():
    values = [1.0, 2.0, 3.0, 4.0]
    mean, hw = metrics.mean_ci95(values)
    assert mean == 2.5
    assert hw == pytest.approx(3.182 * statistics.stdev(values) / 2)
    assert metrics.mean_ci95([5.0]) == (5.0, 0.0)


def rank(r: int, times: list[float], seconds: float, batch: int = 32) -> metrics.RankMeasurement:
    return metrics.RankMeasurement(r, f"h{r}", batch, tuple(times), seconds)


def test_total_is_all_images_over_the_slowest_rank():
    fast = rank(0, [0.1] * 10, 1.0)  # 320 img/s
    slow = rank(1, [0.2] * 10, 2.0)  # 160 img/s
    t = metrics.aggregate([fast, slow])
    assert t.total_images_per_sec == pytest.approx(640 / 2.0)  # not 2 x rank 0's 320
    assert t.sum_of_rank_images_per_sec == pytest.approx(480.0)
    assert t.slowest_rank == 1 and t.slowest_rank_seconds == 2.0
    assert t.global_batch_size == 64 and t.num_ranks == 2 and t.num_steps == 10
    assert t.per_device_images_per_sec == pytest.approx(32 / 0.15)
    lo, hi = t.per_device_images_per_sec_ci95
    assert lo < t.per_device_images_per_sec < hi


def test_ci_brackets_and_narrows_with_more_steps():
    few = metrics.aggregate([rank(0, [0.1, 0.12, 0.09, 0.11], 0.42)])
    many = metrics.aggregate([rank(0, [0.1, 0.12, 0.09, 0.11] * 25, 42.0)])
    w_few = few.per_device_images_per_sec_ci95[1] - few.per_device_images_per_sec_ci95[0]
    w_many = many.per_device_images_per_sec_ci95[1] - many.per_device_images_per_sec_ci95[0]
    assert w_many < w_few / 3
    assert math.isfinite(w_many)


def test_summary_has_the_parsable_total_line():
    t = metrics.aggregate([rank(0, [0.1] * 4, 0.4)])
    lines = metrics.summary_lines(t)
    assert "total images/sec: 320.00" in lines
    assert lines[0] == lines[2] == "-" * 64


def test_aggregate_needs_measurements():
    with pytest.raises(ValueError):
        metrics.aggregate([])


def test_horovod_lines_parse_as_horovods_synthetic_benchmark():
    """The regular expressions of ReFrame's hpctestlib Horovod check and of site checks."""
    import re

    t = metrics.aggregate([rank(0, [0.1, 0.12, 0.09, 0.11], 0.42), rank(1, [0.1] * 4, 0.4)])
    text = "\n".join(metrics.horovod_lines(t, "resnet50", "GPU"))
    total = re.search(r"Total img/sec on 2 GPU\(s\): (\S+) \+-(\S+)", text)
    per = re.search(r"Img/sec per GPU: (\S+) \+-(\S+)", text)
    assert total and per
    assert float(total.group(1)) == round(t.total_images_per_sec, 2)
    assert float(per.group(1)) == round(t.per_device_images_per_sec, 2)
    assert 0 < float(total.group(2)) < float(total.group(1))
    assert re.search(r"^Model: resnet50$", text, re.M)
    assert re.search(r"^Batch size: 32$", text, re.M)
