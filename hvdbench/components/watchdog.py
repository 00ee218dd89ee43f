"""An out-of-band watchdog: per-rank heartbeats and a step deadline, outside the collectives.

Neither Horovod nor MPI notices a dead or stopped rank soon enough: every Horovod cycle
starts with a collective, so the survivors block inside a TensorFlow op, where Python signal
handlers never run, and MPI then waits forever. The watchdog is a thread per rank that talks
over its own TCP connection, so it keeps running while the main thread is blocked (TF
releases the GIL).

Topology: every non-chief rank listens on an ephemeral port; the chief learns the addresses
through one gather and connects to each. Both sides send a small JSON line every
``heartbeat_interval_s`` with their step. The chief declares a rank lost when its connection
closes (the process died) or when nothing arrived for ``heartbeat_timeout_s`` (stopped or
unreachable), and a stall when a step has run longer than ``step_deadline_s``. It then calls
the abort callback (which saves what was measured), tells every rank to abort, and exits the
process with :data:`EXIT_FAULT`; the launcher brings the rest of the job down. A non-chief
rank aborts when it loses the chief.

Scale: the chief holds one socket per rank and waits on them with :mod:`selectors` (epoll on
Linux, no ``FD_SETSIZE`` limit of 1024), connects to every rank at once (non-blocking
connects, retried until ``startup_timeout``), and raises its ``RLIMIT_NOFILE`` soft limit to
the hard limit first. Its work per interval is O(ranks); a non-chief's is O(1).

With an ``on_lost`` callback (the chief of a synchronous job with backup workers, see
:mod:`hvdbench.modes.grpc.lost_workers`), a non-chief rank whose process exited is handed to the
callback instead: it returns ``None`` to leave the rank out and keep watching the others,
or the message to abort with. A rank that stopped responding still aborts the job.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EXIT_FAULT = 3  # the job was aborted by the watchdog: a rank was lost or stalled


@dataclass
class Peer:
    """What the chief knows of one rank."""

    rank: int
    host: str
    sock: socket.socket | None = None
    last_heard: float = field(default_factory=time.monotonic)
    step: int = 0
    buffer: bytes = b""
    lost: bool = False  # left out after its process exited (backup workers)


class Progress:
    """The step this rank is in, shared between the training loop and the watchdog."""

    def __init__(self) -> None:
        self.step = 0
        self.step_started = time.monotonic()
        self.active = False  # only measured against the deadline while stepping

    def begin(self, step: int) -> None:
        self.step = step
        self.step_started = time.monotonic()
        self.active = True

    def end(self) -> None:
        self.active = False

    def stalled_for(self) -> float:
        return time.monotonic() - self.step_started if self.active else 0.0


def advertised_address(host: str, chief_host: str) -> str:
    """The address the chief should use to reach a rank on ``host``."""
    if host == chief_host:
        return "127.0.0.1"
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


class Watchdog:
    """One rank's watchdog thread. Start it with :meth:`listen` + :meth:`start`."""

    def __init__(
        self,
        rank: int,
        host: str,
        *,
        interval: float,
        timeout: float,
        step_deadline: float,
        on_abort: Callable[[str], None],
        progress: Progress,
        on_lost: Callable[[Peer], str | None] | None = None,
        startup_timeout: float | None = None,
    ) -> None:
        """``startup_timeout`` bounds the waits before the first heartbeat (the chief's
        connections, a rank's wait for the chief); None: ``timeout``."""
        self.rank, self.host = rank, host
        self.interval, self.timeout, self.step_deadline = interval, timeout, step_deadline
        self.startup_timeout = timeout if startup_timeout is None else startup_timeout
        self._startup_key = (
            "fault.heartbeat_timeout_s" if startup_timeout is None else "launch.startup_timeout_s"
        )
        self.on_abort = on_abort
        self.progress = progress
        self.on_lost = on_lost
        self.peers: list[Peer] = []
        self._listener: socket.socket | None = None
        self._chief: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._aborting = threading.Lock()

    # -- set-up ------------------------------------------------------------------------
    def listen(self) -> int:
        """Non-chief ranks: open the port the chief will connect to; return it."""
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("0.0.0.0", 0))
        self._listener.listen(1)
        return int(self._listener.getsockname()[1])

    def start(self, peers: list[dict[str, Any]] | None = None) -> None:
        """Start the thread. The chief passes every other rank's {rank, host, addr, port}."""
        target: Callable[..., None]
        if peers is not None:
            raise_open_files_limit(len(peers) + 64)
            self.peers = [Peer(p["rank"], p["host"]) for p in peers]
            addresses = {p["rank"]: (p["addr"], p["port"]) for p in peers}
            target = self._run_chief
            args: tuple[Any, ...] = (addresses,)
        else:
            target, args = self._run_rank, ()
        self._thread = threading.Thread(
            target=target, args=args, name="hvdbench-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End watching (a normal finish): the peers see a goodbye, not a fault."""
        self._stop.set()
        for s in [self._chief, *(p.sock for p in self.peers)]:
            if s is not None:
                try:
                    s.sendall(b'{"bye": true}\n')
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=self.interval * 4 + 1)
        for s in [self._listener, self._chief, *(p.sock for p in self.peers)]:
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def wait_for_verdict(self) -> None:
        """Give the thread time to detect a fault (it ends the process when it does)."""
        deadline = time.monotonic() + 2 * self.interval + 1
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- messages ------------------------------------------------------------------------
    def _beat(self) -> bytes:
        return (json.dumps({"rank": self.rank, "step": self.progress.step}) + "\n").encode()

    def _abort(self, message: str, tell: list[socket.socket]) -> None:
        if not self._aborting.acquire(blocking=False) or self._stop.is_set():
            return
        for s in tell:
            try:
                s.sendall((json.dumps({"abort": message}) + "\n").encode())
            except OSError:
                pass
        try:
            self.on_abort(message)
        finally:
            print(f"hvdbench: error: {message}", file=sys.stderr, flush=True)
            os._exit(EXIT_FAULT)

    # -- the chief -----------------------------------------------------------------------
    def _connect(self, addresses: dict[int, tuple[str, int]]) -> bool:
        """Connect to every peer at once: non-blocking connects, each retried until it
        succeeds or ``startup_timeout`` has passed. False when the job was aborted."""
        deadline = time.monotonic() + self.startup_timeout
        sel = selectors.DefaultSelector()
        waiting = {p.rank: p for p in self.peers}
        retry_at: dict[int, float] = {r: 0.0 for r in waiting}
        try:
            while waiting:
                now = time.monotonic()
                for rank in [r for r, t in retry_at.items() if t <= now]:
                    del retry_at[rank]
                    peer = waiting[rank]
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    code = s.connect_ex(addresses[rank])
                    if code in (0, errno.EINPROGRESS):
                        peer.sock = s
                        sel.register(s, selectors.EVENT_WRITE, peer)
                    else:
                        s.close()
                        retry_at[rank] = now + min(self.interval, 0.2)
                for key, _ in sel.select(timeout=0.05):
                    peer = key.data
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    sel.unregister(sock)
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        peer.last_heard = time.monotonic()
                        del waiting[peer.rank]
                    else:  # refused (not listening yet) or unreachable: try again soon
                        sock.close()
                        peer.sock = None
                        retry_at[peer.rank] = time.monotonic() + min(self.interval, 0.2)
                if self._stop.is_set():
                    return False
                if waiting and time.monotonic() > deadline:
                    missing = sorted(waiting.values(), key=lambda p: p.rank)
                    names = ", ".join(f"rank {p.rank} on host {p.host}" for p in missing[:8])
                    more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
                    verb = "is" if len(missing) == 1 else "are"
                    self._abort(
                        f"{names}{more} {verb} unreachable: no watchdog answered within "
                        f"{self.startup_timeout:g} s ({self._startup_key})",
                        [p.sock for p in self.peers if p.sock and p.rank not in waiting],
                    )
                    return False
        finally:
            sel.close()
        return True

    def _run_chief(self, addresses: dict[int, tuple[str, int]]) -> None:
        if not self._connect(addresses):
            return
        sel = selectors.DefaultSelector()
        for peer in self.peers:
            assert peer.sock is not None
            sel.register(peer.sock, selectors.EVENT_READ, peer)
        # Silence is checked a few times per interval, so that a rank that fell silent is
        # named within heartbeat_timeout_s + 1 interval of its last heartbeat.
        check_every = self.interval / 4
        next_beat = next_check = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    beat = self._beat()
                    for peer in self.peers:
                        if peer.sock is not None:
                            try:
                                peer.sock.send(beat)
                            except OSError:
                                pass  # a closed connection shows up as a read of b""
                    next_beat = now + self.interval
                if now >= next_check:
                    if not self._check_silence(now):
                        return
                    self._check_deadline([p.sock for p in self.peers if p.sock is not None])
                    next_check = now + check_every
                timeout = max(0.0, min(next_beat, next_check) - time.monotonic())
                for key, _ in sel.select(timeout=timeout):
                    peer = key.data
                    if peer.sock is None:  # left out or said goodbye in this round
                        continue
                    if not self._read_peer(peer, sel):
                        return
        finally:
            sel.close()

    def _read_peer(self, peer: Peer, sel: selectors.BaseSelector) -> bool:
        """Take what ``peer`` sent; False when the job is over (stopped or aborted)."""
        assert peer.sock is not None
        try:
            data = peer.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            if self._stop.is_set():
                return False
            sock = peer.sock
            if self.on_lost is not None:
                sel.unregister(sock)
                if self._leave_out(peer):
                    return True
                return False
            self._abort(
                f"rank {peer.rank} on host {peer.host} was lost: its process exited "
                f"or its connection closed at step {peer.step}; aborting the job",
                [p.sock for p in self.peers if p.sock is not None and p is not peer],
            )
            return False
        peer.last_heard = time.monotonic()
        peer.buffer += data
        *lines, peer.buffer = peer.buffer.split(b"\n")
        for line in lines:
            msg = json.loads(line)
            if msg.get("bye"):
                sel.unregister(peer.sock)
                peer.sock.close()
                peer.sock = None
                return True
            peer.step = int(msg.get("step", peer.step))
        return True

    def _check_silence(self, now: float) -> bool:
        """Abort (and return False) when a connected rank has been silent too long."""
        for peer in self.peers:
            if peer.sock is not None and now - peer.last_heard > self.timeout:
                self._abort(
                    f"rank {peer.rank} on host {peer.host} stopped responding: no heartbeat "
                    f"for {now - peer.last_heard:.1f} s (fault.heartbeat_timeout_s="
                    f"{self.timeout:g}) at step {peer.step}; aborting the job",
                    [p.sock for p in self.peers if p.sock is not None and p is not peer],
                )
                return False
        return True

    def _leave_out(self, peer: Peer) -> bool:
        """A rank's process exited: leave it out if the callback agrees (then True)."""
        assert self.on_lost is not None
        verdict = self.on_lost(peer)
        if verdict is not None:
            self._abort(verdict, [p.sock for p in self.peers if p.sock and p is not peer])
            return False
        peer.lost = True
        if peer.sock is not None:
            try:
                peer.sock.close()
            except OSError:
                pass
        peer.sock = None
        return True

    def _check_deadline(self, socks: list[socket.socket]) -> None:
        stalled = self.progress.stalled_for()
        if self.step_deadline > 0 and stalled > self.step_deadline:
            behind = [p for p in self.peers if p.step < self.progress.step and not p.lost]
            who = (
                ", ".join(f"rank {p.rank} on host {p.host} (at step {p.step})" for p in behind)
                if behind
                else "all ranks"
            )
            self._abort(
                f"step {self.progress.step} has run {stalled:.1f} s, past the deadline of "
                f"{self.step_deadline:g} s (fault.step_deadline_s); waiting on {who}; aborting the job",
                socks,
            )

    # -- every other rank ----------------------------------------------------------------
    def _run_rank(self) -> None:
        assert self._listener is not None
        self._listener.settimeout(self.startup_timeout)
        try:
            self._chief, _ = self._listener.accept()
        except OSError:
            if not self._stop.is_set():
                self._abort(
                    f"rank {self.rank} on host {self.host}: the chief (worker 0) never connected "
                    f"within {self.startup_timeout:g} s ({self._startup_key}); aborting",
                    [],
                )
            return
        self._chief.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(self._chief, selectors.EVENT_READ)
        try:
            self._watch_chief(self._chief, sel)
        finally:
            sel.close()

    def _watch_chief(self, chief: socket.socket, sel: selectors.BaseSelector) -> None:
        last_heard = time.monotonic()
        buffer = b""
        while not self._stop.wait(self.interval):
            try:
                chief.send(self._beat())
            except OSError:
                pass
            readable = sel.select(timeout=0)
            now = time.monotonic()
            if readable:
                try:
                    data = chief.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    if not self._stop.is_set():
                        self._abort(
                            f"rank {self.rank} on host {self.host} lost the chief (worker 0): its "
                            "connection closed; aborting",
                            [],
                        )
                    return
                last_heard = now
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    if "abort" in msg:
                        self._abort(f"aborted by the chief: {msg['abort']}", [])
                        return
                    if msg.get("bye"):
                        return
            elif now - last_heard > self.timeout:
                self._abort(
                    f"rank {self.rank} on host {self.host} lost the chief (worker 0): no heartbeat "
                    f"for {now - last_heard:.1f} s (fault.heartbeat_timeout_s={self.timeout:g}); aborting",
                    [],
                )
                return


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's ``RLIMIT_NOFILE`` soft limit to the hard limit (the chief holds
    a socket per rank, and a soft limit of 1024 is common). Returns the soft limit now in
    effect; says so on stderr when it is still below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        print(
            f"hvdbench: warning: the watchdog needs about {needed} open files, but "
            f"RLIMIT_NOFILE is {soft} (hard {hard}); raise it (ulimit -n) for this many ranks",
            file=sys.stderr,
            flush=True,
        )
    return int(soft)
