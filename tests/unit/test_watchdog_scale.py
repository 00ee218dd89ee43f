"""The watchdog at thousands of ranks: 2,000 simulated ranks (bench/watchdog_peers.py, one
process, one thread) speak the heartbeat protocol to a real chief Watchdog, which starts
with a soft RLIMIT_NOFILE of 1024 as on many machines. One rank falls silent; the chief names
it within heartbeat_timeout_s + 1 interval of its last heartbeat and ends the process."""

from __future__ import annotations

import json
import os
import resource
import socket
import sys

import pytest

from hvdbench.components import watchdog
from tests.conftest import REPO, base_env, run

PEERS = 2000
INTERVAL, TIMEOUT = 0.5, 3.0


def test_2000_ranks_one_falls_silent_and_is_named():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3 * PEERS + 64:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is below what 2,000 ranks need here")
    r = run(
        [sys.executable, str(REPO / "bench" / "watchdog_peers.py"), "--chief", str(PEERS),
         "--interval", str(INTERVAL), "--timeout", str(TIMEOUT), "--silent", "1234",
         "--soft-nofile", "1024"],
        timeout=120, env=base_env(),
    )  # fmt: skip
    assert r.returncode == watchdog.EXIT_FAULT, r.output
    out = json.loads(r.stdout.splitlines()[0])
    assert out["message"].startswith("rank 1234 on host sim1234 stopped responding"), out
    assert TIMEOUT < out["since_last_beat"] <= TIMEOUT + INTERVAL, out
    assert out["soft_nofile"] > 1024  # raised to the hard limit
    assert "rank 1234 on host sim1234 stopped responding" in r.stderr


def test_the_soft_open_files_limit_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert watchdog.raise_open_files_limit(100) == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_unreachable_rank_is_named_after_the_startup_timeout(capfd):
    """Ranks that never listen: the concurrent connects give up after startup_timeout and
    name them (and the key that bounds the wait)."""
    held = [socket.socket() for _ in range(3)]
    for s in held:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    ports = [s.getsockname()[1] for s in held]
    messages: list[str] = []
    dog = watchdog.Watchdog(0, "chief", interval=0.1, timeout=30, step_deadline=0,
                            on_abort=messages.append, progress=watchdog.Progress(),
                            startup_timeout=1.0)  # fmt: skip
    peers = [{"rank": i + 1, "host": f"h{i + 1}", "port": p, "addr": "127.0.0.1"}
             for i, p in enumerate(ports)]  # fmt: skip
    exits: list[int] = []
    real_exit = os._exit
    os._exit = exits.append  # type: ignore[assignment]  # keep pytest alive
    try:
        dog.peers = [watchdog.Peer(p["rank"], p["host"]) for p in peers]
        ok = dog._connect({p["rank"]: (p["addr"], p["port"]) for p in peers})
    finally:
        os._exit = real_exit
        for s in held:
            s.close()
    assert not ok and exits == [watchdog.EXIT_FAULT]
    assert messages == [
        "rank 1 on host h1, rank 2 on host h2, rank 3 on host h3 are unreachable: no watchdog "
        "answered within 1 s (launch.startup_timeout_s)"
    ]
