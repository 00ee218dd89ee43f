"""Partial overlap: the gradient readiness profile of a model (per-layer FLOPs) and the
event simulation of Horovod's exchange, checked by hand and against the two bounds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvdbench.study import model, overlap, readiness
from hvdbench.study.readiness import LayerCost


def ring(n: int, alpha: float, bw: float) -> Callable[[float], float]:
    return lambda b: model.ring_time(n, b, alpha, bw)


# ---------------------------------------------------------------------------------------
# readiness profile


def test_readiness_of_a_chain_by_hand() -> None:
    layers = [
        LayerCost("conv", 100.0, (40, 4), input_gradient=False),  # backward: weights only
        LayerCost("pool", 10.0, (), input_gradient=True),  # backward: input only
        LayerCost("fc", 20.0, (80, 8), input_gradient=True),  # backward: 2 x forward
    ]
    forward, backward = 130.0, 100.0 + 10.0 + 40.0
    total = forward + backward
    assert readiness.readiness(layers) == [
        (8, pytest.approx((forward + 40.0) / total)),
        (80, pytest.approx((forward + 40.0) / total)),
        (4, 1.0),
        (40, 1.0),
    ]
    assert readiness.readiness([]) == []


def test_grouped_follows_horovods_split_of_the_variables() -> None:
    # backward order: the last variables first; forward order is v0..v4
    profile = [(5, 0.5), (4, 0.6), (3, 0.7), (2, 0.9), (1, 1.0)]
    # split_list(5 variables, 2) -> [v0 v1 v2] [v3 v4]; a group is ready with its last member
    assert readiness.grouped(profile, 2) == [(9, 0.6), (6, 1.0)]
    assert readiness.grouped(profile, 1) == [(15, 1.0)]
    assert readiness.grouped(profile, 0) == profile


def test_profile_of_a_small_keras_model_has_the_known_flops() -> None:
    import tensorflow as tf

    layers = tf.keras.layers
    for fmt, shape in (("channels_last", (8, 8, 2)), ("channels_first", (2, 8, 8))):
        m = tf.keras.Sequential(
            [
                tf.keras.Input(shape),
                layers.Conv2D(4, 3, padding="same", data_format=fmt, name="conv"),
                layers.MaxPool2D(2, data_format=fmt, name="pool"),
                layers.Flatten(name="flat"),
                layers.Dense(3, name="fc"),
            ]
        )
        costs = {c.name: c for c in readiness.layer_costs(m)}
        # conv: 2 x (3*3*2*4 kernel) x 64 positions; pool: 64 outputs x 2*2 window;
        # flatten: 64 outputs; dense: 2 x 64*3
        assert {k: c.forward_flops for k, c in costs.items()} == {
            "conv": 9216.0, "pool": 256.0, "flat": 64.0, "fc": 384.0
        }  # fmt: skip
        assert costs["conv"].gradient_bytes == (288, 16) and not costs["conv"].input_gradient
        assert costs["fc"].gradient_bytes == (768, 12) and costs["fc"].input_gradient
        forward = 9216 + 256 + 64 + 384
        total = forward + 9216 + 256 + 64 + 2 * 384
        fc_ready = (forward + 2 * 384) / total
        assert readiness.gradient_profile(m) == [
            (12, pytest.approx(fc_ready)),
            (768, pytest.approx(fc_ready)),
            (16, 1.0),
            (288, 1.0),
        ]
        assert sum(b for b, _ in readiness.gradient_profile(m, 2)) == (288 + 16 + 768 + 12) // 2


# ---------------------------------------------------------------------------------------
# the exchange


def test_simulation_by_hand_cycles_fusion_and_latency() -> None:
    def cost(b: float) -> float:
        return 0.001 + b / 1000  # 1 ms per message, 1000 bytes/s

    tensors = [(10.0, 0.0005), (20.0, 0.0030), (5.0, 0.0031), (50.0, 0.0505)]
    # cycle at 0 finds nothing; at 2 ms A (11 ms) -> 13 ms; B+C fused (26 ms) -> 39 ms;
    # D is ready at 50.5 ms, the cycle grid from 39 ms reaches 51 ms; D takes 51 ms
    ex = overlap.simulate(tensors, cost, cycle_s=0.002)
    assert ex.end_s == pytest.approx(0.102)
    assert (ex.messages, ex.cycles) == (4 - 1, 3)
    # a 15-byte fusion threshold splits B and C: one more latency term
    ex = overlap.simulate(tensors, cost, cycle_s=0.002, fusion_bytes=15)
    assert (ex.messages, ex.cycles) == (4, 3)
    assert ex.end_s == pytest.approx(0.040 + 0.012 + 0.051)
    # without a cycle, every tensor goes as soon as the link is free
    ex = overlap.simulate(tensors, cost, cycle_s=0.0)
    assert ex.end_s == pytest.approx(0.0505 + 0.051)


def test_every_cycle_negotiates_first() -> None:
    def cost(b: float) -> float:
        return 0.001 + b / 1000

    # negotiation 3 ms > cycle 2 ms: idle cycles start at 0, 3, 6 ms; A (ready 0.5 ms) goes
    # in the cycle at 3 ms: 3 + 3 + 11 = 17 ms; B+C (ready by 3.1 ms) in the next: 17 + 3
    # + 26 = 46 ms; D (ready 50.5 ms): idle cycles at 46, 49, 52 ms: 52 + 3 + 51 = 106 ms
    tensors = [(10.0, 0.0005), (20.0, 0.0030), (5.0, 0.0031), (50.0, 0.0505)]
    ex = overlap.simulate(tensors, cost, cycle_s=0.002, negotiate_s=0.003)
    assert ex.end_s == pytest.approx(0.106)
    assert (ex.messages, ex.cycles) == (3, 3)
    # in the step model the negotiation is an all-reduce of nothing: 2(n-1)·α
    knobs = overlap.Knobs(cycle_s=0.0, fusion_bytes=math.inf)
    step, _ = overlap.partial_overlap_step(0.010, [(1e6, 1.0)], ring(3, 1e-3, 1e9), 3, knobs)
    # idle cycles every 4 ms: the one at 12 ms finds the gradient (ready at 10 ms)
    assert step == pytest.approx(0.012 + 4e-3 + (4e-3 + 4 / 3 * 1e6 / 1e9))


def test_the_bounds_are_the_profiles_extremes() -> None:
    # without latency: no negotiation, and one message costs what three do
    knobs = overlap.Knobs(cycle_s=0.0, fusion_bytes=math.inf)
    cost, s, t_c = ring(4, 0.0, 1e8), 3e6, 0.05
    comm = model.ring_time(4, s, 0.0, 1e8)
    at_end = [(1e6, 1.0)] * 3  # every gradient ready when compute ends: no overlap
    assert overlap.partial_overlap_step(t_c, at_end, cost, 4, knobs)[0] == pytest.approx(t_c + comm)
    at_start = [(1e6, 0.0)] * 3  # all ready at once at the start: perfect overlap
    assert overlap.partial_overlap_step(t_c, at_start, cost, 4, knobs)[0] == pytest.approx(
        max(t_c, comm)
    )


PROFILES = st.lists(st.tuples(st.integers(0, 10**8), st.floats(0.0, 1.0)), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    profile=PROFILES,
    t_c=st.floats(1e-4, 1.0),
    n=st.integers(1, 64),
    alpha=st.floats(0.0, 1e-2),
    bw=st.floats(1e6, 1e11),
    cycle=st.floats(0.0, 1e-2),
    threshold=st.floats(1e3, 1e9),
)
def test_partial_overlap_lies_between_the_bounds(
    profile: list[tuple[int, float]],
    t_c: float,
    n: int,
    alpha: float,
    bw: float,
    cycle: float,
    threshold: float,
) -> None:
    knobs = overlap.Knobs(cycle_s=cycle, fusion_bytes=threshold)
    step, ex = overlap.partial_overlap_step(t_c, profile, ring(n, alpha, bw), n, knobs)
    if n == 1:
        assert step == t_c
        return
    comm = model.ring_time(n, sum(b for b, _ in profile), alpha, bw)
    tol = 1e-9 * (t_c + comm)
    assert step >= max(t_c, comm) - tol  # perfect overlap is a lower bound
    # Horovod's own costs the single fused message of the no-overlap bound does not pay:
    # one latency term per extra fused message, and waits for the next cycle.
    # and the negotiation that starts every cycle (the first one found after a wait for
    # ready tensors comes at most one idle period late)
    negotiate = 2 * (n - 1) * alpha
    extra = (
        (ex.messages - 1) * 2 * (n - 1) * alpha
        + ex.cycles * (cycle + negotiate)
        + max(cycle, negotiate)
    )
    assert step <= t_c + comm + extra + tol
    # without latency and cycle time, the simulation is strictly within the two bounds
    free = overlap.Knobs(cycle_s=0.0, fusion_bytes=threshold)
    step0, _ = overlap.partial_overlap_step(t_c, profile, ring(n, 0.0, bw), n, free)
    comm0 = model.ring_time(n, sum(b for b, _ in profile), 0.0, bw)
    assert max(t_c, comm0) - tol <= step0 <= t_c + comm0 + tol


def test_knobs_from_a_record_config() -> None:
    cfg = {"horovod": {"cycle_time_ms": 5.0, "fusion_threshold_mb": 2.0, "num_groups": 3}}
    assert overlap.Knobs.from_config(cfg) == overlap.Knobs(0.005, 2 * 1024 * 1024, 3)
    # compiled steps average all gradients in one grouped all-reduce after the backward pass
    assert overlap.Knobs.from_config(cfg | {"train": {"jit_compile": True}}).groups == 1
    assert overlap.Knobs.from_config({}) == overlap.Knobs()


# ---------------------------------------------------------------------------------------
# in predict


def test_predict_adds_the_partial_overlap_column() -> None:
    fit = model.LinkFit(alpha_s=1e-3, bandwidth_Bps=1e8, num_samples=4, rms_relative_error=0.0)
    measured = {1: (0.1, 1.0), 2: (0.15, 0.7)}
    # 9 of 10 MB ready at 40% of compute, 1 MB at the end (a big dense layer near the top)
    profile = [(9_000_000, 0.4), (1_000_000, 1.0)]
    knobs = overlap.Knobs(cycle_s=0.0)
    preds = {p.ranks: p for p in model.predict("horovod", measured, [4], 10e6, fit,
                                               profile=profile, knobs=knobs)}  # fmt: skip
    assert preds[1].step_partial_s == pytest.approx(0.1)
    assert preds[1].efficiency_partial == pytest.approx(1.0)
    # n = 2, negotiation 2 ms, so idle cycles every 2 ms: 9 MB ready at 40 ms: 2 ms + 2 ms
    # + 90 ms -> 134 ms; 1 MB (ready at 100 ms) in the next cycle: 2 ms + 12 ms -> 148 ms
    assert preds[2].step_partial_s == pytest.approx(0.134 + 0.014)
    assert preds[2].messages == 2
    for p in preds.values():
        assert p.step_overlap_s <= p.step_partial_s <= p.step_no_overlap_s  # type: ignore[operator]
    # the profile is rescaled to S (e.g. fp16 compression)
    half = model.predict("horovod", measured, [2], 5e6, fit, profile=profile, knobs=knobs)
    # 4.5 MB at 40 ms end at 89 ms; 0.5 MB ready at 100 ms: idle cycles from 89 ms every
    # 2 ms, the one at 101 ms takes it: 2 ms + 7 ms
    assert half[1].step_partial_s == pytest.approx(0.101 + 0.002 + 0.007)
    table = model.markdown(list(preds.values()), fit, {"horovod": 10e6})
    assert "| step partial (ms) |" in table and "| predicted eff. partial |" in table
    assert "| horovod | 2 | 102.000 | 202.00 | 102.00 | 148.00 | 0.495 | 0.980 | 0.676 |" in table
    # modes that do not all-reduce gradient by gradient get no partial prediction
    other = model.predict("collective_all_reduce", measured, [4], 10e6, fit, profile=profile)
    assert all(p.step_partial_s is None and p.efficiency_partial is None for p in other)
    assert "| 102.00 | — | 0.495 |" in model.markdown(other, fit, {"collective_all_reduce": 10e6})


def test_predict_command_prints_the_partial_prediction(tmp_path: Path) -> None:
    from tests.conftest import hvdbench

    def rec(n: int, step: float) -> dict[str, object]:
        return {
            "schema_version": 1, "status": "complete", "mode": "horovod",
            "config": {"model": {"name": "mnist_mlp"},
                       "horovod": {"cycle_time_ms": 1.0, "fusion_threshold_mb": 64.0}},
            "totals": {"num_ranks": n, "per_device_batch_size": 32, "global_batch_size": 32 * n,
                       "total_images_per_sec": 32 * n / step,
                       "per_device_images_per_sec": 32 / step, "step_time_median": step,
                       "per_device_images_per_sec_ci95": [0.0, 0.0]},
        }  # fmt: skip

    study = tmp_path / "study"
    study.mkdir()
    (study / "n1.json").write_text(json.dumps(rec(1, 0.010)))
    (study / "n2.json").write_text(json.dumps(rec(2, 0.014)))
    ar = {"schema_version": 1, "kind": "allreduce", "status": "complete", "world_size": 2,
          "results": [{"implementation": "horovod", "size_bytes": s, "time_s": 1e-4 + s / 1e8}
                      for s in (1024, 65536, 4194304)]}  # fmt: skip
    (tmp_path / "ar.json").write_text(json.dumps(ar))
    r = hvdbench("predict", str(study), "--ranks", "1,2,4", "--allreduce", str(tmp_path / "ar.json"),
                 timeout=180)  # fmt: skip
    assert r.returncode == 0, r.output
    # mnist_mlp: 784x100 + 100, 100x10 + 10 float32 -> 4 gradients, 318,040 bytes
    assert "Partial overlap (horovod): 4 gradients, one tensor per variable" in r.stdout
    assert "S: horovod 318,040" in r.stdout
    rows = [ln.split("|")[1:-1] for ln in r.stdout.splitlines() if ln.startswith("| horovod |")]
    assert [c[1].strip() for c in rows] == ["1", "2", "4"]
    for c in rows:
        no, ov, pa = (float(c[i]) for i in (3, 4, 5))
        assert ov <= pa <= no + 1.0  # within one cycle (1 ms) and the latency of a message
        assert 0 < float(c[8]) <= 1.0
    help_text = hvdbench("predict", "--help", timeout=60).stdout
    assert "partial overlap" in help_text
