"""Model and mode registries agree with the names the config layer validates against."""

from __future__ import annotations

import pytest

from hvdbench import config, models, modes
from hvdbench.errors import UsageError
from hvdbench.models.specs import MODEL_SPECS
from hvdbench.modes.horovod import SOLO_CYCLE_TIME_MS, knob_env


def test_every_model_name_has_a_spec_and_a_builder():
    assert set(config.MODEL_NAMES) == set(MODEL_SPECS)
    assert set(models.registered()) == set(config.MODEL_NAMES)


def test_every_mode_name_is_registered():
    assert set(modes.registered()) == set(config.MODE_NAMES)


def test_unknown_mode_is_a_usage_error():
    with pytest.raises(UsageError, match="mode.name: 'nope' is not registered"):
        modes.get("nope")


@pytest.mark.parametrize("name", ["trivial", "mnist_mlp", "cifar10_cnn", "resnet20"])
def test_small_models_build_with_native_shapes(name):
    cfg = config.load(None, [f"--model.name={name}"])
    model = models.build(cfg)
    spec = MODEL_SPECS[name]
    assert model.input_shape == (None, spec.image_size, spec.image_size, spec.channels)
    assert model.output_shape == (None, spec.num_classes)


def test_resnet20_has_the_papers_parameter_count():
    cfg = config.load(None, ["--model.name=resnet20"])
    assert 0.26e6 < models.build(cfg).count_params() < 0.28e6  # He et al.: 0.27M


def test_mnist_mlp_is_784_100_10():
    cfg = config.load(None, ["--model.name=mnist_mlp"])
    assert models.build(cfg).count_params() == 784 * 100 + 100 + 100 * 10 + 10


def test_horovod_knobs_become_environment():
    cfg = config.load(
        None,
        [
            "--horovod.fusion_threshold_mib=32",
            "--horovod.cycle_time_ms=2.5",
            "--horovod.timeline=/tmp/tl.json",
        ],
    )
    env, effective, warnings = knob_env(cfg.horovod, nccl_built=False, world_size=2)
    assert env["HOROVOD_FUSION_THRESHOLD"] == str(32 * 1024 * 1024)
    assert env["HOROVOD_CYCLE_TIME"] == "2.5"
    assert env["HOROVOD_TIMELINE"] == "/tmp/tl.json"
    assert env["HOROVOD_HIERARCHICAL_ALLREDUCE"] == "0"
    assert effective["fusion_threshold_bytes"] == 32 * 1024 * 1024 and warnings == []


def test_a_world_of_one_rank_keeps_horovods_thread_quiet():
    """One rank exchanges nothing: Horovod's background thread need not wake every 1 ms."""
    cfg = config.load(None, ["--horovod.cycle_time_ms=1"])
    env, effective, _ = knob_env(cfg.horovod, nccl_built=False, world_size=1)
    assert env["HOROVOD_CYCLE_TIME"] == repr(SOLO_CYCLE_TIME_MS) and SOLO_CYCLE_TIME_MS >= 50
    assert effective["cycle_time_ms"] == SOLO_CYCLE_TIME_MS
    env, effective, _ = knob_env(cfg.horovod, nccl_built=False, world_size=2)
    assert env["HOROVOD_CYCLE_TIME"] == "1.0" and effective["cycle_time_ms"] == 1.0


def test_hierarchical_allreduce_needs_nccl():
    cfg = config.load(None, ["--horovod.hierarchical_allreduce=true"])
    env, effective, warnings = knob_env(cfg.horovod, nccl_built=False, world_size=2)
    assert (
        env["HOROVOD_HIERARCHICAL_ALLREDUCE"] == "0"
        and effective["hierarchical_allreduce"] is False
    )
    assert len(warnings) == 1 and "NCCL" in warnings[0]
    env, effective, warnings = knob_env(cfg.horovod, nccl_built=True, world_size=2)
    assert (
        env["HOROVOD_HIERARCHICAL_ALLREDUCE"] == "1" and effective["hierarchical_allreduce"] is True
    )
    assert warnings == []


class FakeBuild:
    """Stands in for `horovod.tensorflow`'s build queries only."""

    def __init__(self, mpi: bool, gloo: bool) -> None:
        self._mpi, self._gloo = mpi, gloo

    def mpi_built(self) -> bool:
        return self._mpi

    def gloo_built(self) -> bool:
        return self._gloo


def test_horovod_without_the_needed_controller_says_how_to_rebuild():
    from hvdbench.modes.horovod import check_build, required_controller

    assert required_controller("horovod", {"HOROVOD_GLOO_RENDEZVOUS_ADDR": "1.2.3.4"}) == "gloo"
    assert required_controller("openmpi", {}) == "mpi"
    assert required_controller("single", {}) is None
    check_build(FakeBuild(mpi=True, gloo=True), "gloo")
    with pytest.raises(UsageError, match="HOROVOD_WITH_GLOO=1"):
        check_build(FakeBuild(mpi=True, gloo=False), "gloo")
    with pytest.raises(UsageError, match="HOROVOD_WITH_MPI=1"):
        check_build(FakeBuild(mpi=False, gloo=True), "mpi")
