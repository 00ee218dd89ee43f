"""The chief watchdog's CPU cost at many ranks: a benchmark, not a test (docs/PERFORMANCE.md).

A child process serves N simulated ranks (bench/watchdog_peers.py --serve); this process runs
a real chief :class:`~hvdbench.components.watchdog.Watchdog` connected to all of them, and measures its
own CPU time (user + system, all threads: the main thread only sleeps) over a window once
every connection is up. Prints the CPU model (lscpu), the connect time and CPU seconds per
second of wall time.

    python bench/watchdog_load.py [--ranks 2000] [--interval 1.0] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hvdbench.components import watchdog  # noqa: E402


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def measure(ranks: int, interval: float, seconds: float) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("watchdog_peers.py")), "--serve",
         str(ranks), "--interval", str(interval)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdin is not None
        peers = json.loads(server.stdout.readline())
        dog = watchdog.Watchdog(
            0, "chief", interval=interval, timeout=max(10 * interval, 30), step_deadline=0,
            on_abort=lambda m: print(f"aborted: {m}", file=sys.stderr),
            progress=watchdog.Progress(),
        )  # fmt: skip
        start = time.monotonic()
        dog.start(peers)
        while any(p.sock is None for p in dog.peers) or not dog.running:
            time.sleep(0.01)
        connected = time.monotonic() - start
        time.sleep(2 * interval)  # settle: the first beats in both directions
        c0, w0 = cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        c1, w1 = cpu_seconds(), time.monotonic()
        dog.stop()
        return {"connect_s": connected, "cpu_per_s": (c1 - c0) / (w1 - w0)}
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ranks", type=int, default=2000)
    p.add_argument("--interval", type=float, default=1.0, help="fault.heartbeat_interval_s")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window")
    args = p.parse_args()
    watchdog.raise_open_files_limit(args.ranks + 64)
    r = measure(args.ranks, args.interval, args.seconds)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(
        f"chief watchdog, {args.ranks} ranks, heartbeat every {args.interval:g} s: "
        f"connected to all in {r['connect_s']:.2f} s; {r['cpu_per_s'] * 100:.2f}% of one core "
        f"({r['cpu_per_s'] * 1e6 * args.interval / args.ranks:.1f} us of CPU per rank per "
        f"heartbeat) over {args.seconds:g} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
