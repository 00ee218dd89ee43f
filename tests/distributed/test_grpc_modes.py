"""The other cluster modes: distributed_replicated and collective_all_reduce with 2
workers on loopback, replicated and independent on 2 logical CPU devices."""

from __future__ import annotations

import pytest

from tests.conftest import hvdbench
from tests.distributed.cluster_helpers import leftover, one_record
from tests.modes import bounded_args

pytestmark = pytest.mark.distributed

FAST = [
    "--model.name=trivial",
    "--train.num_warmup_steps=1",
    "--train.num_steps=5",
]


def run_mode(out, *args: str) -> dict:
    r = hvdbench("run", f"--output.dir={out}", *args, *FAST, *bounded_args(args), timeout=180)
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    assert "Traceback" not in r.output, r.output[-3000:]
    assert "total images/sec:" in r.stdout
    assert leftover(str(out)) == []
    rec = one_record(out)
    assert rec["totals"]["num_ranks"] == 2 and rec["totals"]["total_images_per_sec"] > 0
    local = rec["mode"] in ("replicated", "independent")
    # a local-device run is one measured process driving both devices, not two copies
    assert [len(p["step_times"]) for p in rec["per_rank"]] == ([5] if local else [5, 5])
    assert [p.get("devices", 1) for p in rec["per_rank"]] == ([2] if local else [1, 1])
    assert rec["totals"]["measured_processes"] == (1 if local else 2)
    return rec


def test_distributed_replicated_two_workers(tmp_path):
    rec = run_mode(tmp_path, "--mode.name=distributed_replicated", "--np", "2")
    d = rec["mode_details"]
    assert (d["num_ps"], d["num_workers"], d["sync"]) == (1, 2, True)
    assert d["final_global_step"] >= 5


def test_collective_all_reduce_two_workers(tmp_path):
    rec = run_mode(tmp_path, "--mode.name=collective_all_reduce", "--np", "2")
    d = rec["mode_details"]
    assert d["num_workers"] == 2 and d["replicas_in_sync"] == 2
    assert len(d["cluster"]["worker"]) == 2 and "ps" not in d["cluster"]


@pytest.mark.parametrize("mode", ["replicated", "independent"])
def test_local_devices(tmp_path, mode):
    rec = run_mode(tmp_path, f"--mode.name={mode}", "--mode.num_devices=2")
    assert rec["mode_details"]["devices"] == ["/cpu:0", "/cpu:1"]
    assert rec["mode_details"]["processes"] == 1


def test_collective_all_reduce_under_mpirun(tmp_path):
    """Roles and addresses from MPI ranks (mpi4py allgather), TF_CONFIG by hvdbench."""
    import sys

    from tests.conftest import base_env, run

    cmd = [
        "mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none",
        sys.executable, "-m", "hvdbench", "run", "--mode.name=collective_all_reduce",
        f"--output.dir={tmp_path}", *FAST,
    ]  # fmt: skip
    r = run(cmd, timeout=180, env=base_env())
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    assert leftover(str(tmp_path)) == []
    d = one_record(tmp_path)["mode_details"]
    assert d["roles_from"] == "mpi ranks" and d["num_workers"] == 2
