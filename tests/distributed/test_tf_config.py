"""A cluster from TF_CONFIG, as Kubeflow's TFJob starts it: every task by hand on
loopback, each with its own TF_CONFIG, and nothing else telling it where it is. The
record must match the one of a run that hvdbench launched itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvdbench.modes.grpc.cluster import LOOPBACK, free_ports
from tests.conftest import base_env, hvdbench
from tests.distributed.cluster_helpers import leftover, one_record
from tests.modes import bounded

pytestmark = pytest.mark.distributed

FAST = [
    "--model.name=trivial",
    "--train.num_warmup_steps=1",
    "--train.num_steps=5",
]
TIMEOUT_S = 240


def start_tasks(out: Path, mode: str, cluster: dict, tasks: list[tuple[str, int]]) -> dict:
    """Start one hvdbench per task, each with its TF_CONFIG; wait (bounded) for all;
    return task -> (exit code, output)."""
    procs = {}
    argv = [sys.executable, "-m", "hvdbench", "run", f"--mode.name={mode}", f"--output.dir={out}"]
    try:
        for kind, index in tasks:
            tf_config = json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})
            procs[(kind, index)] = subprocess.Popen(
                [*argv, *FAST, *bounded(mode)],
                env=base_env({"TF_CONFIG": tf_config}),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        deadline = time.monotonic() + TIMEOUT_S
        results = {}
        for task, p in procs.items():
            try:
                text, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                text, _ = p.communicate()
                pytest.fail(f"task {task} did not end within {TIMEOUT_S} s:\n{text[-3000:]}")
            results[task] = (p.returncode, text)
        return results
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


def launched_record(out: Path, mode: str) -> dict:
    r = hvdbench(
        "run", f"--mode.name={mode}", "--np", "2", f"--output.dir={out}", *FAST, *bounded(mode)
    )
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    return one_record(out)


def assert_same_run(by_hand: dict, launched: dict) -> None:
    for rec in (by_hand, launched):
        assert rec["status"] == "complete"
        assert rec["totals"]["total_images_per_sec"] > 0
        assert rec["totals"]["num_ranks"] == 2
    for key in ("mode", "model"):
        assert by_hand[key] == launched[key]
    for key in ("global_batch_size", "num_ranks"):
        assert by_hand["totals"][key] == launched["totals"][key]
    assert by_hand["mode_details"]["num_workers"] == launched["mode_details"]["num_workers"] == 2
    assert [len(p["step_times"]) for p in by_hand["per_rank"]] == [5, 5]


def test_parameter_server_from_tf_config(tmp_path):
    p0, c0, w0, e0 = (f"{LOOPBACK}:{p}" for p in free_ports(4))
    cluster = {"chief": [c0], "worker": [w0], "ps": [p0], "evaluator": [e0]}
    tasks = [("ps", 0), ("worker", 0), ("chief", 0), ("evaluator", 0)]
    out = tmp_path / "tfjob"
    results = start_tasks(out, "parameter_server", cluster, tasks)
    for task, (code, text) in results.items():
        assert code == 0, (task, text[-3000:])
        assert "Traceback" not in text, (task, text[-3000:])
    code, text = results[("evaluator", 0)]
    assert "evaluator" in text and "nothing to do" in text
    assert "total images/sec:" in results[("chief", 0)][1]
    assert leftover(str(out)) == []
    rec = one_record(out)
    # chief is worker 0, the worker tasks follow; the evaluator is no member.
    assert rec["mode_details"]["cluster"] == {"ps": [p0], "worker": [c0, w0]}
    assert_same_run(rec, launched_record(tmp_path / "launched", "parameter_server"))


def test_collective_all_reduce_from_tf_config(tmp_path):
    """Without a chief, worker 0 is the chief (MultiWorkerMirroredStrategy's own rule)."""
    w0, w1 = (f"{LOOPBACK}:{p}" for p in free_ports(2))
    out = tmp_path / "tfjob"
    results = start_tasks(
        out, "collective_all_reduce", {"worker": [w0, w1]}, [("worker", 1), ("worker", 0)]
    )
    for task, (code, text) in results.items():
        assert code == 0, (task, text[-3000:])
    assert "total images/sec:" in results[("worker", 0)][1]
    assert leftover(str(out)) == []
    rec = one_record(out)
    assert rec["mode_details"]["cluster"] == {"worker": [w0, w1]}
    assert rec["mode_details"]["replicas_in_sync"] == 2
    assert_same_run(rec, launched_record(tmp_path / "launched", "collective_all_reduce"))
