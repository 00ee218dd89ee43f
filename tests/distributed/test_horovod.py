"""Horovod replicated mode under real launchers: `horovodrun --gloo` and `mpirun`, 2 ranks.

One job per launcher runs hvdbench's own HorovodMode for a few steps and dumps each rank's
weights; the assertions are rank-symmetric. A second job per launcher is the end-to-end
`hvdbench run` a user types.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from hvdbench.launch import launcher
from tests.conftest import REPO, base_env, hvdbench, run

pytestmark = pytest.mark.distributed

SCRIPT = str(REPO / "tests" / "distributed" / "scripts" / "hvd_steps.py")
STEPS = 4
# SGD, no batch norm: one averaged step on 2 ranks is one step on both batches together.
EQUIV = [
    "--model.name=mnist_mlp",
    "--train.optimizer=sgd",
    "--train.learning_rate=0.1",
    "--train.weight_decay=0.001",
    "--train.per_device_batch_size=16",
]
LAUNCHERS = ["horovodrun", "mpirun"]


def launch_argv(which: str, np_: int, cmd: list[str]) -> list[str]:
    if which == "mpirun":
        return launcher.mpirun_command(np_, cmd, oversubscribe=np_ > len(os.sched_getaffinity(0)))
    return launcher.horovodrun_command(np_, cmd, controller="gloo")


def load(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[np.ndarray]:
    out = tmp_path_factory.mktemp("reference")
    r = run(
        [sys.executable, SCRIPT, str(out), "1", "--reference", "--ranks", "2", *EQUIV], timeout=120
    )
    assert r.returncode == 0, r.output
    return load(out / "reference.npz")


@pytest.fixture(scope="module", params=LAUNCHERS)
def steps_job(request, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(f"steps-{request.param}")
    cmd = launch_argv(request.param, 2, [sys.executable, SCRIPT, str(out), str(STEPS), *EQUIV])
    r = run(cmd, timeout=240)
    assert r.returncode == 0, r.output
    return request.param, out


def test_both_ranks_ran_under_the_launcher(steps_job):
    which, out = steps_job
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["rank"] for i in infos] == [0, 1] and all(i["size"] == 2 for i in infos)
    assert {i["source"] for i in infos} == {"horovod" if which == "horovodrun" else "openmpi"}
    # each rank bound itself to its own share of the cores
    assert not set(infos[0]["cpus"]) & set(infos[1]["cpus"])


def test_ranks_saw_different_data(steps_job):
    _, out = steps_job
    losses = [json.loads((out / f"rank{r}.json").read_text())["losses"] for r in (0, 1)]
    assert losses[0][0] != losses[1][0]


def test_all_ranks_hold_identical_weights_after_several_steps(steps_job):
    _, out = steps_job
    for stage in ("initial", "final"):
        w0, w1 = load(out / f"{stage}-rank0.npz"), load(out / f"{stage}-rank1.npz")
        assert len(w0) == len(w1) == 4
        for a, b in zip(w0, w1):
            np.testing.assert_array_equal(a, b)
    moved = [
        np.abs(a - b).max()
        for a, b in zip(load(out / "initial-rank0.npz"), load(out / "final-rank0.npz"))
    ]
    assert min(moved) > 0  # training changed every variable


def test_one_step_equals_single_process_step_on_concatenated_batch(steps_job, reference):
    _, out = steps_job
    step1 = load(out / "step1-rank0.npz")
    initial = load(out / "initial-rank0.npz")
    for got, want, before in zip(step1, reference, initial):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.abs(want - before).max() > 1e-4  # the step is large enough to mean something


@pytest.mark.parametrize("which", LAUNCHERS)
def test_end_to_end_run_writes_a_record(tmp_path, which):
    r = hvdbench(
        "run",
        "--np",
        "2",
        f"--launch.launcher={which}",
        f"--output.dir={tmp_path}",
        "--model.name=trivial",
        "--train.num_warmup_steps=2",
        "--train.num_steps=6",
        "--train.display_every=3",
        timeout=240,
        env=base_env(),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.output
    assert "total images/sec:" in r.stdout
    assert "Step\tImg/sec\ttotal_loss" in r.stdout
    records = list(tmp_path.glob("*.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "complete" and rec["schema_version"] == 1
    assert rec["topology"]["world_size"] == 2
    assert len(rec["per_rank"]) == 2 and all(len(p["step_times"]) == 6 for p in rec["per_rank"])
    totals = rec["totals"]
    assert totals["total_images_per_sec"] > 0
    assert totals["global_batch_size"] == 2 * rec["config"]["train"]["per_device_batch_size"]
    # the total is measured: all images over the slowest rank's time
    images = sum(p["batch_size"] * len(p["step_times"]) for p in rec["per_rank"])
    slowest = max(p["measured_seconds"] for p in rec["per_rank"])
    assert totals["total_images_per_sec"] == pytest.approx(images / slowest)
    assert rec["mode_details"]["controller"] == ("gloo" if which == "horovodrun" else "mpi")
    from hvdbench import tfcompat

    assert rec["versions"]["tensorflow"] == tfcompat.tensorflow_version()
    keras = rec["versions"]["keras"]
    assert keras["version"].startswith("2.") and keras["flavour"] in ("tf-keras", "keras 2")
    from hvdbench.components.record import cpu_model

    assert rec["hardware"]["cpu_model"] == cpu_model() and rec["hardware"]["gpus"] == []
    assert rec["hardware"]["logical_cpus"] == os.cpu_count()
    # TensorFlow's pooling host allocator is in effect in every rank: only BFC keeps stats
    assert [r["allocator"]["cpu_allocator"] for r in rec["topology"]["ranks"]] == ["bfc"] * 2
    assert all(p["host_memory_peak_bytes"] > 0 for p in rec["per_rank"])
    printed = float(r.stdout.split("total images/sec:")[1].split()[0])
    assert printed == pytest.approx(totals["total_images_per_sec"], abs=0.01)


def test_world_size_that_does_not_match_the_config_is_refused(tmp_path):
    cmd = launch_argv(
        "mpirun",
        2,
        [sys.executable, "-m", "hvdbench", "run", "--np", "3", f"--output.dir={tmp_path / 'out'}"],
    )
    r = run(cmd, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.output
    assert (
        "hvdbench: error: launch.np: workers(3) != ranks(2): the launcher started 2 processes "
        "but mode horovod with launch.np=3 needs 3" in r.stderr
    )
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()
