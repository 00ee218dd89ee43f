"""The start-up guard (hvdbench.components.startup): a rank that has not reached its first step
within launch.startup_timeout_s is named, with its phase, and killed; one that only waits
for the others gets a grace first; a rank that reaches its step, or exits, leaves no
watcher behind. Each case runs in a child Python (the guard kills its process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

PRELUDE = """
import os, sys, time
from hvdbench.components import startup
"""


def run(body: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return r, time.monotonic() - t0


def test_a_rank_stuck_in_its_own_start_up_is_named_and_killed_at_the_bound():
    r, took = run(
        """
        startup.begin("rank 3", "nodeA", 1.0, "importing TensorFlow")
        time.sleep(20)
        """
    )
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [
        "hvdbench: error: rank 3 on host nodeA: start-up not done after "
        "launch.startup_timeout_s=1 s, still importing TensorFlow; aborting the job"
    ]
    assert 1.0 <= took < 10, took


def test_a_rank_stuck_in_c_code_holding_the_gil_is_still_bounded():
    # time.sleep releases the GIL; a busy C loop in one bytecode does not. The watcher is
    # a process of its own, so it needs no GIL.
    r, took = run(
        """
        startup.begin("rank 0", "nodeA", 1.0, "in MPI_Init")
        sum(range(10**12))
        """
    )
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert "still in MPI_Init" in r.stderr
    assert took < 10, took


def test_a_waiting_rank_gets_the_grace_so_a_slower_rank_names_itself_first():
    r, took = run(
        """
        startup.begin("rank 1", "nodeB", 1.0, "importing TensorFlow", grace_s=1.5)
        startup.phase("waiting in hvd.init() for every rank to join", waiting=True)
        time.sleep(20)
        """
    )
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [
        "hvdbench: error: rank 1 on host nodeB: waiting in hvd.init() for every rank to join "
        "for more than launch.startup_timeout_s=1 s (+1.5 s for a slower rank to name "
        "itself): a rank that never came holds it; aborting the job"
    ]
    assert 2.5 <= took < 12, took


def test_each_wait_is_bounded_from_its_own_start():
    # Own work took 0.6 s of the 1 s bound; the wait that follows still gets 1 s + grace.
    r, took = run(
        """
        startup.begin("rank 0", "h", 1.0, "building the model", grace_s=0.5)
        time.sleep(0.6)
        startup.phase("waiting for the ps tasks", waiting=True)
        time.sleep(20)
        """
    )
    assert r.returncode == -9
    assert "waiting for the ps tasks for more than" in r.stderr
    assert 2.1 <= took < 12, took


def test_done_ends_the_watch_and_leaves_no_process():
    r, _ = run(
        """
        g = startup.begin("rank 0", "h", 0.5, "importing TensorFlow")
        child = g._child
        startup.done()
        time.sleep(1.5)  # past the bound: nothing may fire
        try:
            os.kill(child, 0)
            print("watcher alive")
        except ProcessLookupError:
            print("watcher gone")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "watcher gone"
    assert r.stderr == ""


def test_a_rank_that_exits_takes_its_watcher_with_it():
    r, _ = run(
        """
        g = startup.begin("rank 0", "h", 60, "importing TensorFlow")
        print(g._child, flush=True)
        os._exit(0)
        """
    )
    child = int(r.stdout.strip())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:  # reaped by init, or still a zombie of nobody's: either way not running
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"watcher {child} outlived its rank")
