"""The cost model: the fit recovers α and B from exact data; predictions follow the formulas."""

from __future__ import annotations

import pytest

from hvdbench.errors import UsageError
from hvdbench.study import model

ALPHA, BW = 25e-6, 2.0e9  # 25 us per hop, 2 GB/s


def exact_samples(ns: list[int], sizes: list[int]) -> list[tuple[int, float, float]]:
    return [(n, float(s), model.ring_time(n, s, ALPHA, BW)) for n in ns for s in sizes]


def test_ring_time_formula() -> None:
    assert model.ring_time(1, 1e9, ALPHA, BW) == 0.0
    # n = 4, S = 100 MB: 2*3*25us + 2*3/4 * 0.05 s
    assert model.ring_time(4, 100e6, ALPHA, BW) == pytest.approx(6 * 25e-6 + 1.5 * 0.05)


def test_fit_recovers_alpha_and_bandwidth() -> None:
    sizes = [1024 * 4**k for k in range(10)]
    fit = model.fit_ring(exact_samples([2], sizes))
    assert fit.alpha_s == pytest.approx(ALPHA, rel=1e-6)
    assert fit.bandwidth_Bps == pytest.approx(BW, rel=1e-6)
    assert fit.rms_relative_error < 1e-9
    joint = model.fit_ring(exact_samples([2, 4, 8], sizes))
    assert joint.alpha_s == pytest.approx(ALPHA, rel=1e-6)
    assert joint.num_samples == 30


def test_fit_clamps_negative_latency() -> None:
    samples = [(2, float(s), s / BW * 1.0 - 1e-7) for s in (1e6, 4e6, 16e6)]
    fit = model.fit_ring(samples)
    assert fit.alpha_s == 0.0
    assert fit.bandwidth_Bps == pytest.approx(BW, rel=0.01)


def test_fit_needs_two_sizes() -> None:
    with pytest.raises(UsageError):
        model.fit_ring([(2, 1e3, 1e-4)])


def test_samples_from_records_prefer_the_implementation() -> None:
    recs = [{"kind": "allreduce", "world_size": 2, "results": [
        {"implementation": "horovod", "size_bytes": 1024, "time_s": 1e-4},
        {"implementation": "mpi4py", "size_bytes": 1024, "time_s": 2e-5}]}]  # fmt: skip
    assert model.allreduce_samples(recs, "horovod") == [(2, 1024.0, 1e-4)]
    assert model.allreduce_samples(recs, "mpi4py") == [(2, 1024.0, 2e-5)]
    assert len(model.allreduce_samples(recs, "nccl")) == 2  # falls back to what exists


def test_predict_ring_with_and_without_overlap() -> None:
    fit = model.LinkFit(ALPHA, BW, 10, 0.0)
    s = 100e6
    measured = {1: (0.2, 1.0)}  # 200 ms compute at n = 1, no communication
    preds = {p.ranks: p for p in model.predict("horovod", measured, [4, 64], s, fit)}
    comm4 = model.ring_time(4, s, ALPHA, BW)
    assert preds[4].comm_s == pytest.approx(comm4)
    assert preds[4].efficiency_no_overlap == pytest.approx(0.2 / (0.2 + comm4))
    assert preds[4].efficiency_overlap == 1.0  # comm (75 ms) hides behind 200 ms of compute
    comm64 = model.ring_time(64, s, ALPHA, BW)
    assert preds[64].efficiency_overlap == pytest.approx(min(1.0, 0.2 / comm64))
    assert preds[1].measured_efficiency == 1.0 and preds[4].measured_efficiency is None


def test_predict_takes_communication_out_of_a_multi_rank_reference() -> None:
    fit = model.LinkFit(ALPHA, BW, 10, 0.0)
    s = 10e6
    step2 = 0.1 + model.ring_time(2, s, ALPHA, BW)  # 100 ms compute + comm at n = 2
    preds = {p.ranks: p for p in model.predict("horovod", {2: (step2, 1.0)}, [8], s, fit)}
    assert preds[8].step_no_overlap_s == pytest.approx(0.1 + model.ring_time(8, s, ALPHA, BW))
    assert preds[2].efficiency_no_overlap == pytest.approx(1.0)


def test_parameter_server_traffic_is_limited_by_ps_bandwidth() -> None:
    fit = model.LinkFit(ALPHA, BW, 10, 0.0)
    s = 40e6
    assert model.pattern("parameter_server") == model.PS
    assert model.pattern("horovod") == model.RING
    t = model.comm_time("parameter_server", 8, s, fit, num_ps=2)
    assert t == pytest.approx(2 * ALPHA + 8 * s / (2 * BW))
    # doubling the ps tasks halves the bandwidth term
    t4 = model.comm_time("parameter_server", 8, s, fit, num_ps=4)
    assert t4 - 2 * ALPHA == pytest.approx((t - 2 * ALPHA) / 2)
    assert model.num_ps_from_config({"ps": {"num_ps": 3}, "model": {"name": "x"}}) == 3
    assert model.num_ps_from_config({"model": {"name": "x"}}) == 1
