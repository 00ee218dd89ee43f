"""The scaling model with compute measured at each N (N one-rank runs started together)."""

from __future__ import annotations

import pytest

from hvdbench.study import model

FIT = model.LinkFit(alpha_s=0.0, bandwidth_Bps=100e6, num_samples=4, rms_relative_error=0.0)
S = 10e6  # bytes: ring at n=2 moves S/B = 0.1 s, at n=4 1.5 S/B = 0.15 s


def test_compute_at_each_n_enters_the_prediction() -> None:
    measured = {1: (0.25, 1.0), 2: (0.3, 0.66), 4: (0.55, 0.36)}
    compute = {1: 0.2, 2: 0.2, 4: 0.4}  # the baseline: 2x slower compute at 4
    preds = {
        p.ranks: p for p in model.predict("horovod", measured, [1, 2, 4, 8], S, FIT, 1, compute)
    }
    assert preds[1].efficiency_no_overlap == pytest.approx(1.0)
    assert preds[2].step_no_overlap_s == pytest.approx(0.25 + 0.1)
    assert preds[4].step_no_overlap_s == pytest.approx(0.5 + 0.15)
    assert preds[4].efficiency_no_overlap == pytest.approx(0.25 / 0.65)
    assert preds[4].step_overlap_s == pytest.approx(0.5)
    # beyond the largest N measured, its slowdown is kept
    assert preds[8].step_no_overlap_s == pytest.approx(0.5 + 2 * 7 / 8 * S / 100e6)
    # without the baseline, compute is the smallest run's at every N
    plain = {p.ranks: p for p in model.predict("horovod", measured, [4], S, FIT)}
    assert plain[4].step_no_overlap_s == pytest.approx(0.25 + 0.15)


def test_compute_times_take_the_median_run_of_complete_runs() -> None:
    def rec(median: float, status: str = "complete") -> dict[str, object]:
        return {"status": status, "totals": {"step_time_mean": median}}

    got = model.compute_times(
        {1: [rec(0.1)], 2: [rec(0.1), rec(0.12), rec(0.5), rec(9.0, "failed")], 4: []}
    )
    assert got == {1: 0.1, 2: 0.12}
