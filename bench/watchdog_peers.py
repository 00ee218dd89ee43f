"""Many simulated ranks speaking the watchdog's heartbeat protocol, for the 2,000-peer test
(tests/unit/test_watchdog_scale.py) and the chief's CPU benchmark (bench/watchdog_load.py).

Each simulated rank is what a non-chief rank's watchdog is on the wire: a listening socket
the chief connects to, a JSON heartbeat line every interval, and reading the chief's lines.
One thread drives them all with a selector, so thousands fit in one process.

    python bench/watchdog_peers.py --chief N --interval S --timeout S --silent R

runs a real chief :class:`~hvdbench.components.watchdog.Watchdog` against N simulated ranks in this
process, silences rank R after a few intervals, and prints one JSON line when the chief
aborts naming it (then exits with the watchdog's EXIT_FAULT).
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hvdbench.components import watchdog  # noqa: E402


class SimulatedRanks:
    """``n`` ranks (1..n) listening on loopback; :meth:`start` runs their heartbeats."""

    def __init__(self, n: int, interval: float) -> None:
        self.interval = interval
        self.listeners: dict[int, socket.socket] = {}
        for rank in range(1, n + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            s.setblocking(False)
            self.listeners[rank] = s
        self.conns: dict[int, socket.socket] = {}
        self.silent: set[int] = set()
        self.last_beat: dict[int, float] = {}
        self.aborts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulated-ranks", daemon=True)

    def peers(self) -> list[dict[str, Any]]:
        return [
            {"rank": r, "host": f"sim{r}", "addr": "127.0.0.1", "port": s.getsockname()[1]}
            for r, s in self.listeners.items()
        ]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for s in [*self.listeners.values(), *self.conns.values()]:
            s.close()

    def silence(self, rank: int) -> float:
        """Rank ``rank`` stops sending (its process is stopped, its socket stays open).
        Returns the time of its last heartbeat."""
        self.silent.add(rank)
        return self.last_beat.get(rank, time.monotonic())

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for rank, s in self.listeners.items():
            sel.register(s, selectors.EVENT_READ, ("listen", rank))
        next_beat = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                for rank, c in self.conns.items():
                    if rank in self.silent:
                        continue
                    try:
                        c.send(json.dumps({"rank": rank, "step": 1}).encode() + b"\n")
                        self.last_beat[rank] = now
                    except OSError:
                        pass
                next_beat = now + self.interval
            for key, _ in sel.select(timeout=max(0.0, next_beat - time.monotonic())):
                kind, rank = key.data
                if kind == "listen":
                    conn, _ = self.listeners[rank].accept()
                    conn.setblocking(False)
                    self.conns[rank] = conn
                    sel.unregister(self.listeners[rank])
                    sel.register(conn, selectors.EVENT_READ, ("conn", rank))
                    continue
                try:
                    data = self.conns[rank].recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(self.conns[rank])
                    continue
                if b'"abort"' in data:
                    self.aborts.append(data.decode(errors="replace"))
        sel.close()


def serve(n: int, interval: float) -> int:
    """Only the simulated ranks: print their peers as one JSON line, beat until stdin closes
    (the chief's side runs in another process: bench/watchdog_load.py)."""
    watchdog.raise_open_files_limit(2 * n + 64)
    ranks = SimulatedRanks(n, interval)
    ranks.start()
    print(json.dumps(ranks.peers()), flush=True)
    sys.stdin.read()
    ranks.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--serve", type=int, default=0, help="only serve this many simulated ranks")
    p.add_argument("--chief", type=int, default=0, help="simulated ranks")
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--silent", type=int, default=1, help="the rank that falls silent")
    p.add_argument("--silent-after", type=float, default=3.0, help="seconds of heartbeats first")
    p.add_argument("--soft-nofile", type=int, default=0, help="lower the soft limit first")
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.interval)
    if args.soft_nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.soft_nofile, hard))
    # The simulated ranks' own sockets (2 per rank) live in this process too.
    watchdog.raise_open_files_limit(3 * args.chief + 64)
    ranks = SimulatedRanks(args.chief, args.interval)
    ranks.start()
    state: dict[str, float] = {}

    def on_abort(message: str) -> None:
        now = time.monotonic()
        print(json.dumps({
            "message": message,
            "since_last_beat": now - state.get("last_beat", now),
            "connect_s": state.get("connected", now) - state["started"],
            "soft_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        }), flush=True)  # fmt: skip

    dog = watchdog.Watchdog(
        0, "chief", interval=args.interval, timeout=args.timeout, step_deadline=0,
        on_abort=on_abort, progress=watchdog.Progress(),
    )  # fmt: skip
    state["started"] = time.monotonic()
    dog.start(ranks.peers())
    deadline = time.monotonic() + args.timeout + 60
    while len(ranks.conns) < args.chief and time.monotonic() < deadline:
        time.sleep(0.01)
    state["connected"] = time.monotonic()
    time.sleep(args.silent_after)
    state["last_beat"] = ranks.silence(args.silent)
    time.sleep(args.timeout + 30)  # the chief ends the process (EXIT_FAULT) long before
    print(json.dumps({"message": None, "connected": len(ranks.conns)}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
