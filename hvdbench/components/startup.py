"""The start-up bound: every wait before the first training step ends within
``launch.startup_timeout_s``.

Start-up is not the run. Before its first step a rank imports TensorFlow, joins the job,
builds the model and meets the other ranks, and on a real cluster (TensorFlow imported
from a shared file system by hundreds of nodes at once) that takes tens of seconds to
minutes. ``fault.heartbeat_timeout_s`` bounds silence *during* the run; it bounds nothing
here. Each wait below carries ``launch.startup_timeout_s`` itself, with a message that
names the bound and what did not come:

======================================================  ==========================  ========
wait before the first step                              where                        bound
======================================================  ==========================  ========
Gloo's rendezvous server (rank 0) to accept             netinfo.GlooRendezvous       startup
Horovod's Gloo store: every rank's key                  HOROVOD_GLOO_TIMEOUT_SECONDS startup
                                                        (unless the user set it)
horovodrun's own checks (``--start-timeout``)           launcher.horovodrun_command  startup
the ps tasks' gRPC servers to accept (workers)          grpc.runtime.wait_for_tasks  startup
a ps task: the chief's first word                       grpc.runtime.serve_ps        startup
a worker: the chief's variable initialisation           ControlPlane.wait_ready      startup
the ps modes' training session (MonitoredSession)       parameter_server.initialize  startup
the ps modes' "start together" agreement                parameter_server.initialize  startup
MultiWorkerMirroredStrategy's collectives (the first    tf_distribute (Communication startup
one is its start-up)                                    Options.timeout_seconds)
the chief's watchdog connecting to every rank           watchdog._connect            startup
a rank's watchdog waiting for the chief's connection    watchdog._run_rank           startup
======================================================  ==========================  ========

Some waits cannot carry a timeout of their own: ``MPI_Init`` (Open MPI's start-up fence
waits for every rank, inside ``hvd.init()`` or mpi4py's import, which holds the GIL),
mpi4py's first collective (the gRPC modes' address exchange under mpirun/srun), Horovod's
first broadcast, and the start-up exchange of rank information (:meth:`Mode.exchange`).
Those, and a rank's own slow start-up (TensorFlow's import, the model's build, the
checkpoint's restore), are bounded by the :class:`StartupGuard` of every rank: a forked
watcher process that needs no GIL. When the rank has not reached its first step within
the bound, the watcher prints one line naming the bound, the rank, its host and the phase
it is in, and kills the rank (SIGKILL: a rank stuck in C code runs no Python), which makes
the launcher end the job. A rank still busy with its own start-up is named at the bound;
a rank that only waits for the others is given :data:`WAITING_GRACE_S` more, so that the
slow rank names itself first (the launcher then ends the others).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

# A rank that is only waiting for the others waits this much longer than the bound, so
# that a rank still in its own start-up is the one named.
WAITING_GRACE_S = 10.0

_guard: StartupGuard | None = None


class StartupGuard:
    """One rank's bound on its start-up. :meth:`start` forks the watcher; :meth:`phase`
    says what the rank is doing now; :meth:`done` ends the watch (at the first step)."""

    def __init__(
        self, who: str, host: str, timeout_s: float, grace_s: float = WAITING_GRACE_S
    ) -> None:
        self.who, self.host, self.timeout_s, self.grace_s = who, host, timeout_s, grace_s
        self._write = -1
        self._child = 0

    def start(self, phase: str) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the watcher: no imports, no threads, only the pipe and a clock
            os.close(write)
            code = 0
            try:
                _watch(read, os.getppid(), self, phase)
            except BaseException:  # noqa: BLE001 - never let the watcher raise into pytest
                code = 1
            finally:
                os._exit(code)
        os.close(read)
        self._write, self._child = write, pid

    def phase(self, text: str, waiting: bool = False) -> None:
        if self._write >= 0:
            self._send(("W" if waiting else "P") + text.replace("\n", " "))

    def done(self) -> None:
        if self._write < 0:
            return
        self._send("D")
        os.close(self._write)
        self._write = -1
        try:
            os.waitpid(self._child, 0)
        except ChildProcessError:
            pass

    def _send(self, line: str) -> None:
        try:
            os.write(self._write, (line + "\n").encode())
        except OSError:  # the watcher is gone: nothing guards start-up any more
            self._write = -1


def _watch(fd: int, parent: int, guard: StartupGuard, phase: str) -> None:
    """The watcher's loop: follow the phases until ``D`` or EOF; at the bound, name the
    phase and kill the rank."""
    timeout_s, grace_s = guard.timeout_s, guard.grace_s
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)  # stop signals are the rank's business
    start = since = time.monotonic()
    waiting = False
    buffer = b""
    while True:
        # Its own start-up is bounded from the process's start; each wait for the others
        # from the wait's own start (those that carry the bound themselves fire first).
        deadline = (since + timeout_s + grace_s) if waiting else (start + timeout_s)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 4096)
        if not data:
            return  # the rank exited: nothing to guard
        buffer += data
        *lines, rest = buffer.split(b"\n")
        buffer = rest
        for raw in lines:
            line = raw.decode(errors="replace")
            if line.startswith("D"):
                return
            waiting, phase = line.startswith("W"), line[1:]
            if waiting:
                since = time.monotonic()
    if waiting:
        what = (
            f"{phase} for more than launch.startup_timeout_s={timeout_s:g} s "
            f"(+{grace_s:g} s for a slower rank to name itself): a rank that never "
            "came holds it"
        )
    else:
        what = f"start-up not done after launch.startup_timeout_s={timeout_s:g} s, still {phase}"
    print(
        f"hvdbench: error: {guard.who} on host {guard.host}: {what}; aborting the job",
        file=sys.stderr,
        flush=True,
    )
    try:
        os.kill(parent, signal.SIGKILL)
    except ProcessLookupError:
        pass


def begin(
    who: str, host: str, timeout_s: float, phase: str, grace_s: float = WAITING_GRACE_S
) -> StartupGuard:
    """Start this process's guard (one per process); ``who`` names it (``rank 3``)."""
    global _guard
    if _guard is not None:
        _guard.done()
    _guard = StartupGuard(who, host, timeout_s, grace_s)
    _guard.start(phase)
    return _guard


def phase(text: str, waiting: bool = False) -> None:
    """Say what this rank's start-up is doing now (a no-op without a guard). ``waiting``:
    the rank waits for the others, rather than working on its own start-up."""
    if _guard is not None:
        _guard.phase(text, waiting)


def done() -> None:
    """The first step is reached (or, for a ps task, serving begins): start-up is over."""
    global _guard
    if _guard is not None:
        _guard.done()
        _guard = None
