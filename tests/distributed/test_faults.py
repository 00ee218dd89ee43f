"""Faults provoked for real in Horovod mode: a rank killed with SIGKILL, a rank stopped with
SIGSTOP. The job must end, name the lost rank and its host, keep the chief's measurements in
an incomplete record, and leave no process behind. Detection bounds come from config keys
that the tests set short."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvdbench.components.watchdog import EXIT_FAULT
from tests.conftest import base_env

pytestmark = pytest.mark.distributed

HEARTBEAT_TIMEOUT = 4.0
INTERVAL = 0.5


def start_job(tmp_path: Path, launcher: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "hvdbench",
        "run",
        "--np",
        "2",
        f"--launch.launcher={launcher}",
        f"--output.dir={tmp_path / 'records'}",
        "--model.name=mnist_mlp",
        "--train.num_warmup_steps=2",
        "--train.num_steps=1000000",
        "--train.display_every=20",
        f"--fault.heartbeat_timeout_s={HEARTBEAT_TIMEOUT}",
        f"--fault.heartbeat_interval_s={INTERVAL}",
    ]
    return subprocess.Popen(
        cmd,
        env=base_env(),
        cwd=tmp_path,
        start_new_session=True,
        text=True,
        stdout=open(tmp_path / "out.txt", "w"),
        stderr=open(tmp_path / "err.txt", "w"),
    )


def wait_for_steps(tmp_path: Path, job: subprocess.Popen[str], steps: int, timeout: float) -> dict:
    """The chief's incomplete record, once it holds at least ``steps`` measured steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, (tmp_path / "err.txt").read_text()
        for path in (tmp_path / "records").glob("*.json"):
            rec = json.loads(path.read_text())
            if rec["per_rank"] and len(rec["per_rank"][0]["step_times"]) >= steps:
                return rec
        time.sleep(0.5)
    raise AssertionError(f"no record with {steps} steps within {timeout} s")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def finish(job: subprocess.Popen[str], timeout: float) -> tuple[int | None, float]:
    t0 = time.monotonic()
    try:
        code: int | None = job.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - t0


def cleanup(job: subprocess.Popen[str], pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.wait(timeout=30)


@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_lost_rank_ends_the_job_and_keeps_the_measurements(tmp_path, launcher, fault):
    job = start_job(tmp_path, launcher)
    pids: list[int] = []
    try:
        rec = wait_for_steps(tmp_path, job, 40, timeout=150)
        pids = [r["pid"] for r in rec["topology"]["ranks"]]
        victim = next(r for r in rec["topology"]["ranks"] if r["worker"] == 1)
        os.kill(victim["pid"], getattr(signal, fault))
        code, elapsed = finish(job, timeout=60)
        err = (tmp_path / "err.txt").read_text()
        print(f"detection: {launcher} {fault} of rank 1: fault to job end {elapsed:.1f} s")
        assert code is not None, f"job still running 60 s after {fault}"
        assert code != 0
        host = socket.gethostname()
        if fault == "SIGKILL":
            assert f"rank 1 on host {host} was lost" in err
        else:
            m = re.search(
                rf"rank 1 on host {host} stopped responding: no heartbeat for ([\d.]+) s", err
            )
            assert m, err
            print(f"detection: {launcher} SIGSTOP: no heartbeat for {m.group(1)} s when named")
            assert HEARTBEAT_TIMEOUT <= float(m.group(1)) < HEARTBEAT_TIMEOUT + 2 * INTERVAL + 1
            # detected within the configured bound, plus the launcher's teardown
            assert elapsed < HEARTBEAT_TIMEOUT + 20
        # the chief's record survives, marked incomplete, with the steps measured so far
        records = list((tmp_path / "records").glob("*.json"))
        assert len(records) == 1
        final = json.loads(records[0].read_text())
        assert final["status"] == "incomplete"
        assert "rank 1 on host" in final["error"]
        assert len(final["per_rank"][0]["step_times"]) >= 40
        assert not [p.name for p in (tmp_path / "records").iterdir() if p.name.startswith(".")]
        # no rank is left behind
        time.sleep(1)
        assert [p for p in pids if alive(p)] == []
    finally:
        cleanup(job, pids)


def test_exit_code_is_documented():
    assert EXIT_FAULT == 3
