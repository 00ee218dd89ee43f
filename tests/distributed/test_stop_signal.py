"""A stop signal that reaches one rank only: the ranks still agree on a stop step.

Under Slurm every task gets the signal (tests/slurm covers that path); here SIGUSR1 goes to
rank 1 alone, so only the collective agreement can stop rank 0 (the chief) at the same step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import base_env

pytestmark = pytest.mark.distributed


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for kid in _children(todo.pop()):
            out.append(kid)
            todo.append(kid)
    return out


def _rank_pid(top: int, rank: int) -> int | None:
    for pid in _descendants(top):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"hvdbench" in cmd and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return pid
    return None


def test_signal_to_one_rank_stops_both_at_the_same_step(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    cmd = [sys.executable, "-m", "hvdbench", "run", "--np", "2", "--launch.launcher=mpirun",
           "--model.name=trivial", "--train.per_device_batch_size=4",
           "--train.num_steps=1000000", "--train.display_every=1000000",
           "--train.num_warmup_steps=1", "--stop.check_every=3", f"--output.dir={tmp_path}"]  # fmt: skip
    with open(out, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=base_env(),
                                start_new_session=True)  # fmt: skip
    everything: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while "Done warm up" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.5)
        assert "Done warm up" in out.read_text(), out.read_text()
        everything = _descendants(proc.pid)
        target = _rank_pid(proc.pid, 1)
        assert target is not None, "rank 1 not found"
        os.kill(target, signal.SIGUSR1)
        rc = proc.wait(timeout=120)
    finally:
        for pid in [*everything, proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    text = out.read_text()
    assert rc == 128 + signal.SIGUSR1, text
    (path,) = tmp_path.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "incomplete"
    stop = rec["stop"]
    assert stop["signal"] == "SIGUSR1" and stop["signals_by_rank"] == [None, "SIGUSR1"]
    assert stop["steps_done"] % 3 == 0  # agreed at a check step
    steps = [len(r["step_times"]) for r in rec["per_rank"]]
    assert steps == [stop["measured_steps_done"]] * 2 and steps[0] < 1000000
    assert rec["totals"]["num_steps"] == steps[0]
    assert "hvdbench: stopping on SIGUSR1" in text
