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


def test_lockstep_ranks_give_the_job_step_times_hand_computed():
    """Two ranks in lockstep: step i of the job lasts as long as its slower rank."""
    a = rank(0, [0.10, 0.30, 0.20], 0.6)
    b = rank(1, [0.20, 0.10, 0.20], 0.5)
    assert metrics.job_step_times([a.step_times, b.step_times]) == [0.20, 0.30, 0.20]
    t = metrics.aggregate([a, b], lockstep=True)
    # job steps 0.2, 0.3, 0.2: mean 0.7/3, sample stdev 0.057735, t(2 df) = 4.303
    mean = 0.7 / 3
    hw = 4.303 * 0.0577350269 / math.sqrt(3)
    assert t.step_time_mean == pytest.approx(mean)
    assert t.step_time_ci95 == pytest.approx(hw, rel=1e-6)
    assert t.step_time_median == pytest.approx(0.2)
    assert t.per_device_images_per_sec == pytest.approx(32 / mean)
    lo, hi = t.per_device_images_per_sec_ci95
    assert (lo, hi) == (pytest.approx(32 / (mean + hw)), pytest.approx(32 / (mean - hw)))
    assert t.step_times_from == metrics.JOB
    assert t.total_images_per_sec == pytest.approx(2 * 3 * 32 / 0.6)  # unchanged
    # pooled, the six times would narrow the interval as if the ranks were independent
    pooled = metrics.aggregate([a, b])
    assert pooled.step_times_from == metrics.POOLED
    assert pooled.step_time_mean == pytest.approx(1.1 / 6)


def test_duplicated_ranks_no_longer_narrow_the_interval():
    """N copies of one rank's times narrowed a pooled interval by about sqrt(N); the job's
    step times of ranks in lockstep are the same series whatever N."""
    times = [0.1, 0.12, 0.09, 0.11, 0.1, 0.13]
    one = metrics.aggregate([rank(0, times, 0.65)])
    four = metrics.aggregate([rank(r, times, 0.65) for r in range(4)], lockstep=True)
    assert four.step_time_ci95 == pytest.approx(one.step_time_ci95)
    pooled = metrics.aggregate([rank(r, times, 0.65) for r in range(4)])
    assert pooled.step_time_ci95 < one.step_time_ci95 / 1.9


def test_one_process_with_several_devices_is_one_measurement():
    m = metrics.RankMeasurement(0, "h", 32, (0.1,) * 10, 1.0, devices=4)
    t = metrics.aggregate([m], lockstep=True)
    assert t.num_ranks == 4 and t.measured_processes == 1
    assert t.global_batch_size == 128
    assert t.total_images_per_sec == pytest.approx(4 * 32 * 10 / 1.0)
    assert t.per_device_images_per_sec == pytest.approx(320.0)
    assert metrics.RankMeasurement.from_dict(m.to_dict()) == m


def test_backup_worker_rates_hand_computed():
    """3 workers, 2 gradients aggregated a step: 100 global steps apply 200 of the 290
    gradients computed (100 + 100 + 90 steps), so 200/290 of the images computed count."""
    r = metrics.applied_rates(870.0, 100, 2, 290)
    assert r["gradients_applied"] == 200
    assert r["applied_share"] == pytest.approx(200 / 290)
    assert r["applied_images_per_sec"] == pytest.approx(600.0)
    assert r["computed_images_per_sec"] == 870.0
    assert metrics.applied_line(r) == (
        "applied images/sec: 600.00 of 870.00 computed (200 of 290 gradients applied; "
        "backup workers)"
    )
    assert metrics.applied_rates(10.0, 5, 2, 8)["applied_share"] == 1.0  # never above all
