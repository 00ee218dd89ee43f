"""Launch command lines, built by pure functions, and the one thin step that runs them.

Every builder returns ``list[str]`` and touches nothing, so tests assert the exact argv.
``execute`` is the only place a launcher process is started.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

from hvdbench.config import Config, parse_hosts
from hvdbench.errors import UsageError
from hvdbench.launch.topology import Topology

# Set in the environment of every process hvdbench launches: it runs as one rank.
LAUNCHED = "HVDBENCH_LAUNCHED"

# Environment passed to remote ranks by mpirun (-x); local ranks inherit everything.
MPI_EXPORT_PREFIXES = ("HOROVOD_", "HVDBENCH_", "TF_", "NCCL_", "OMPI_ALLOW_")
MPI_EXPORT_NAMES = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV")


def hosts_arg(hosts: str, np: int) -> str:
    """The ``-H`` value: the given hosts, or localhost with ``np`` slots."""
    if not hosts:
        return f"localhost:{np}"
    return ",".join(f"{h}:{n}" for h, n in parse_hosts(hosts))


def rank_command(argv: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command each rank runs: this same hvdbench invocation, inside the launcher."""
    return [python, "-m", "hvdbench", *argv]


def horovodrun_command(
    np: int,
    command: Sequence[str],
    *,
    hosts: str = "",
    controller: str = "gloo",
    network_interface: str = "",
    horovodrun: str = "horovodrun",
    start_timeout_s: float = 0,
) -> list[str]:
    """``horovodrun -np N -H hosts --gloo|--mpi [--network-interface IF]
    [--start-timeout S] command...``. ``start_timeout_s`` (launch.startup_timeout_s)
    bounds horovodrun's own start-up checks, whose default is 30 s."""
    if controller not in ("gloo", "mpi"):
        raise UsageError(f"launch.horovodrun_controller: {controller!r} is not one of: gloo, mpi")
    cmd = [horovodrun, "-np", str(np), "-H", hosts_arg(hosts, np), f"--{controller}"]
    if network_interface:
        cmd += ["--network-interface", network_interface]
    if start_timeout_s > 0:
        cmd += ["--start-timeout", str(max(1, int(round(start_timeout_s))))]
    return cmd + list(command)


def mpirun_command(
    np: int,
    command: Sequence[str],
    *,
    hosts: str = "",
    network_interface: str = "",
    export: Sequence[str] = (),
    oversubscribe: bool = False,
    mpirun: str = "mpirun",
) -> list[str]:
    """``mpirun -np N -H hosts --bind-to none --map-by slot [-x VAR]... command...``.

    Binding is left to hvdbench (each rank binds itself to its share of the node's cores,
    under any launcher); ``--oversubscribe`` is needed for more ranks than cores.
    """
    cmd = [
        mpirun,
        "-np",
        str(np),
        "-H",
        hosts_arg(hosts, np),
        "--bind-to",
        "none",
        "--map-by",
        "slot",
    ]
    if oversubscribe:
        cmd.append("--oversubscribe")
    if network_interface:
        cmd += ["--mca", "btl_tcp_if_include", network_interface]
        cmd += ["--mca", "oob_tcp_if_include", network_interface]
    for name in export:
        cmd += ["-x", name]
    return cmd + list(command)


def launch_command(cfg: Config, np: int, rank_cmd: list[str]) -> list[str]:
    """The launcher argv for ``np`` processes running ``rank_cmd``, per ``cfg.launch``."""
    return launcher_command(
        cfg.launch.launcher,
        np,
        rank_cmd,
        hosts=cfg.launch.hosts,
        controller=cfg.launch.horovodrun_controller,
        network_interface=cfg.launch.network_interface,
        start_timeout_s=cfg.launch.startup_timeout_s,
    )


def launcher_command(
    launcher: str,
    np: int,
    rank_cmd: list[str],
    *,
    hosts: str = "",
    controller: str = "gloo",
    network_interface: str = "",
    start_timeout_s: float = 0,
) -> list[str]:
    """The one mpirun-or-horovodrun choice (``auto`` is mpirun), with the tools found
    beside this Python, for ``hvdbench run`` and ``hvdbench allreduce`` alike."""
    if launcher in ("auto", "mpirun"):
        return mpirun_command(
            np,
            rank_cmd,
            hosts=hosts,
            network_interface=network_interface,
            export=export_names(os.environ) if hosts else (),
            oversubscribe=np > len(os.sched_getaffinity(0)),
            mpirun=tool_path("mpirun"),
        )
    return horovodrun_command(
        np,
        rank_cmd,
        hosts=hosts,
        controller=controller,
        network_interface=network_interface,
        horovodrun=tool_path("horovodrun"),
        start_timeout_s=start_timeout_s,
    )


def inside_launcher(topo: Topology, env: Mapping[str, str]) -> bool:
    """Whether this process is one rank of a launched job, so it must not launch again:
    a launcher's variables say so, or hvdbench's own mark (:data:`LAUNCHED`)."""
    return topo.launched or env.get(LAUNCHED) == "1"


def export_names(env: Mapping[str, str]) -> list[str]:
    """The variables mpirun forwards to remote ranks, sorted for a stable argv."""
    return sorted(n for n in env if n in MPI_EXPORT_NAMES or n.startswith(MPI_EXPORT_PREFIXES))


def launch_env(env: Mapping[str, str], is_root: bool) -> dict[str, str]:
    """The launcher's environment: Open MPI refuses root without its two opt-ins."""
    out = dict(env)
    out[LAUNCHED] = "1"
    if is_root:
        out.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        out.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return out


def tool_path(name: str) -> str:
    """A launcher next to this Python (a virtualenv's bin), else on PATH, else the name."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which(name) or name


LOST_RANK = re.compile(r"process rank (\d+) with PID")


def execute(
    cmd: Sequence[str], env: Mapping[str, str], rank_role: Callable[[int], str] | None = None
) -> int:
    """Run a launcher in its own process group; forward SIGINT/SIGTERM/SIGUSR1; leave nothing behind.

    With ``rank_role``, the launcher's stderr is passed through line by line, and when the
    job fails after mpirun named a rank it lost (``process rank N with PID ...``), that
    rank's role in the job is named too (e.g. ``ps task 0``), since mpirun knows only ranks.
    """
    try:
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            start_new_session=True,
            stderr=subprocess.PIPE if rank_role else None,
        )
    except FileNotFoundError:
        raise UsageError(
            f"launcher '{cmd[0]}' not found; run `make install` or put it on PATH"
        ) from None

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {
        s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    }
    lost: list[int] = []
    watcher = None
    if rank_role is not None:
        watcher = threading.Thread(target=_pass_stderr, args=(proc, lost), daemon=True)
        watcher.start()
    try:
        code = proc.wait()
        if watcher is not None:
            watcher.join(timeout=5)
        if code != 0 and lost and rank_role is not None:
            print(
                f"hvdbench: the job lost rank {lost[0]}: {rank_role(lost[0])}",
                file=sys.stderr,
                flush=True,
            )
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pass_stderr(proc: subprocess.Popen[bytes], lost: list[int]) -> None:
    """Copy the launcher's stderr to ours, noting the first rank it says was lost."""
    assert proc.stderr is not None
    for raw in proc.stderr:
        sys.stderr.buffer.write(raw)
        sys.stderr.flush()
        m = LOST_RANK.search(raw.decode(errors="replace"))
        if m and not lost:
            lost.append(int(m.group(1)))
