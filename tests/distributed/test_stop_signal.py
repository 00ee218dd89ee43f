"""A stop signal that reaches one rank only: the ranks still agree on a stop step.

Under Slurm every task gets the signal (tests/slurm covers that path); here SIGUSR1 goes to
rank 1 alone, so only the collective agreement can stop rank 0 (the chief) at the same step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import base_env, hvdbench
from tests.distributed.cluster_helpers import leftover

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


def _state(pid: int) -> str:
    """The one-letter scheduler state of ``pid`` (``T`` once stopped), or ``""`` if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _deliver_together(pids: list[int], signum: int) -> None:
    """Send ``signum`` to every pid so that each has it before any can act on it.

    A rank can reach a stop check between two ``os.kill`` calls and agree to stop with
    the signal of only one rank. So the ranks are frozen first (SIGSTOP, waited for, at
    most 30 s), signalled, and then resumed: each sees its signal on waking."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while any(_state(p) not in ("T", "t", "") for p in pids):
        assert time.monotonic() < deadline, f"ranks {pids} did not stop in 30 s"
        time.sleep(0.05)
    for pid in pids:
        os.kill(pid, signum)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def _endless_job(output_dir: Path, *how: str) -> list[str]:
    """A 2-rank ``hvdbench run`` of a million tiny steps that checks for a stop every 3."""
    return [sys.executable, "-m", "hvdbench", "run", "--np", "2", *how,
            "--model.name=trivial", "--train.per_device_batch_size=4",
            "--train.num_steps=1000000", "--train.display_every=1000000",
            "--train.num_warmup_steps=1", "--stop.check_every=3", f"--output.dir={output_dir}"]  # fmt: skip


@contextlib.contextmanager
def _warmed_up(cmd: list[str], log: Path) -> Iterator[tuple[subprocess.Popen, list[int]]]:
    """Start ``cmd`` in a session of its own with its output in ``log``, wait (at most
    180 s) for its warm-up to end, and yield it with its descendants as they are then.
    On the way out, whatever of them is left is killed."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=base_env(),
                                start_new_session=True)  # fmt: skip
    everything: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while "Done warm up" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.5)
        assert "Done warm up" in log.read_text(), log.read_text()
        everything = _descendants(proc.pid)
        yield proc, everything
    finally:
        for pid in [*everything, proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def _signal_ranks(
    output_dir: Path, log: Path, signum: int, ranks: tuple[int, ...]
) -> tuple[int, str, float]:
    """Start a 2-rank mpirun job of a million steps (stop checks every 3), wait for its
    warm-up, send ``signum`` to ``ranks``, and wait for the job to end. Returns its exit
    code, its output and the seconds from the signal to the end; kills what is left."""
    cmd = _endless_job(output_dir, "--launch.launcher=mpirun")
    with _warmed_up(cmd, log) as (proc, _):
        pids = [_rank_pid(proc.pid, r) for r in ranks]
        assert None not in pids, f"ranks {ranks} not found"
        sent = time.monotonic()
        _deliver_together(pids, signum)  # type: ignore[arg-type]
        rc = proc.wait(timeout=120)
        elapsed = time.monotonic() - sent
    return rc, log.read_text(), elapsed


def test_signal_to_one_rank_stops_both_at_the_same_step(tmp_path: Path) -> None:
    rc, text, elapsed = _signal_ranks(tmp_path, tmp_path / "out.txt", signal.SIGUSR1, (1,))
    print(f"detection: SIGUSR1 to rank 1 only, to job end {elapsed:.1f} s")
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


def test_sigterm_to_every_rank_saves_a_checkpoint_that_a_rerun_resumes(tmp_path: Path) -> None:
    """SIGTERM to every rank, as Slurm sends it: exit 143, the record incomplete with the
    steps done, and (no checkpoint.dir given) a checkpoint beside the record that a rerun
    given it as checkpoint.dir resumes from, at the stopped run's global step."""
    first = tmp_path / "first"
    rc, text, elapsed = _signal_ranks(first, tmp_path / "out.txt", signal.SIGTERM, (0, 1))
    print(f"detection: SIGTERM to every rank, to job end {elapsed:.1f} s")
    assert rc == 128 + signal.SIGTERM, text
    (path,) = first.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "incomplete"
    stop = rec["stop"]
    assert stop["signal"] == "SIGTERM" and stop["signals_by_rank"] == ["SIGTERM", "SIGTERM"]
    assert stop["steps_done"] % 3 == 0
    done = stop["measured_steps_done"]
    assert [len(r["step_times"]) for r in rec["per_rank"]] == [done, done] and done >= 1
    ckpt = stop["checkpoint"]
    global_step = stop["steps_done"]  # warm-up and measured steps, from step 0
    assert ckpt["global_step"] == rec["global_step"] == global_step
    assert ckpt["dir"] == str(path.with_suffix(".ckpt"))
    assert ckpt["path"] == os.path.join(ckpt["dir"], f"ckpt-{global_step}")
    assert Path(ckpt["path"] + ".index").is_file()
    assert f"checkpoint at global step {global_step} written to {ckpt['path']}" in text

    second = tmp_path / "second"
    r = hvdbench("run", "--model.name=trivial", "--train.per_device_batch_size=4",
                 "--train.num_steps=2", "--train.num_warmup_steps=1",
                 f"--checkpoint.dir={ckpt['dir']}", f"--output.dir={second}", timeout=180)  # fmt: skip
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    assert f"resumed from {ckpt['path']} at step {global_step}" in r.stdout
    (again,) = second.glob("*.json")
    rec2 = json.loads(again.read_text())
    assert rec2["status"] == "complete"
    assert rec2["checkpoint"]["start_step"] == global_step
    assert rec2["global_step"] == global_step + 3


def test_parameter_server_stops_on_one_workers_signal(tmp_path: Path) -> None:
    """Sync parameter_server, spawned locally (1 ps, 2 workers): SIGUSR1 to worker 1 only.
    The workers do not step in lockstep, so they share the stop through a flag on ps 0:
    the chief stops too, writes the incomplete record, the ps task is told to leave, and
    the job ends with 138 and no process left."""
    out = tmp_path / "out.txt"
    cmd = _endless_job(tmp_path, "--mode.name=parameter_server")
    with _warmed_up(cmd, out) as (proc, everything):
        worker1 = [
            p
            for p in everything
            if b"--cluster.job_name=worker\0--cluster.task_index=1"
            in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert len(worker1) == 1, everything
        sent = time.monotonic()
        os.kill(worker1[0], signal.SIGUSR1)
        rc = proc.wait(timeout=120)
        print(f"detection: parameter_server SIGUSR1 to worker 1 only, to job end "
              f"{time.monotonic() - sent:.1f} s")  # fmt: skip
    text = out.read_text()
    assert rc == 128 + signal.SIGUSR1, text
    assert "Traceback" not in text and "stopping the other tasks" not in text, text
    assert leftover(str(tmp_path)) == []
    (path,) = tmp_path.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "incomplete"
    stop = rec["stop"]
    assert stop["signal"] == "SIGUSR1" and stop["signals_by_rank"] == [None, "SIGUSR1"]
    assert stop["steps_done"] % 3 == 0 and stop["measured_steps_done"] >= 1
    assert len(rec["per_rank"][0]["step_times"]) == stop["measured_steps_done"]
    assert all(len(r["step_times"]) >= 1 for r in rec["per_rank"])
    assert stop["checkpoint"] is not None  # saved, or why not (graph modes, for now)
