"""Local launch of a gRPC cluster: every ps and worker task as a child on loopback.

``hvdbench run --mode.name=parameter_server --np 2`` lands here: it picks free ports,
builds the explicit cluster (``--cluster.*`` overrides, so each child is an ordinary
explicit-cluster run), starts the tasks in one process group, and supervises them:

* a worker that fails ends the job at once (its exit code is the job's), except a
  non-chief worker of a synchronous job with backup workers (:mod:`hvdbench.modes.grpc.lost_workers`):
  it is named and left out while enough workers remain to fill a step;
* a ps task that dies while workers still run is restarted on the same port, at most
  ``fault.ps_max_restarts`` times: the workers' ``MonitoredTrainingSession`` recovers from
  the aborted session and the chief reloads the latest checkpoint into the new ps;
* when every worker succeeded, the ps tasks have been told to stop by the chief; one
  that has not left within a grace period is killed and reported;
* whatever happens, the group is killed on the way out, so nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from hvdbench.components import stopping, watchdog
from hvdbench.config import Config
from hvdbench.launch import launcher
from hvdbench.launch.job import JobLayout, Role
from hvdbench.modes.grpc import cluster, lost_workers
from hvdbench.modes.grpc.cluster import ClusterSpec

PS_GRACE_S = 30.0


def task_argv(rank_argv: Sequence[str], spec: ClusterSpec, role: Role) -> list[str]:
    """The child's hvdbench arguments: the user's, plus its place in the explicit cluster."""
    return [
        *rank_argv,
        f"--cluster.ps_hosts={','.join(spec.ps)}",
        f"--cluster.worker_hosts={','.join(spec.worker)}",
        f"--cluster.job_name={role.job}",
        f"--cluster.task_index={role.index}",
    ]


def layout(cfg: Config) -> JobLayout:
    """The job started here: the config's ps tasks and ``launch.np`` workers (at least 1)."""
    planned = JobLayout.plan(cfg)
    return dataclasses.replace(planned, num_workers=planned.num_workers or 1)


def plan(cfg: Config, ports: Sequence[int]) -> tuple[ClusterSpec, list[Role]]:
    """The loopback cluster and the roles to start, ps first."""
    job = layout(cfg)
    return cluster.local_spec(job.num_ps, job.num_workers, ports), job.roles()


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """A child runs as one task of a launched job, never launching again."""
    return {**env, launcher.LAUNCHED: "1"}


def launch_local(cfg: Config, rank_argv: Sequence[str], dry_run: bool = False) -> int | None:
    """A gRPC mode's :meth:`Mode.launch_local`: every task spawned here, unless the cluster
    is explicit (this process is one task of it) or mpirun is to start the ranks (None)."""
    if cfg.cluster.job_name or cfg.launch.launcher == "mpirun":
        return None
    return launch(cfg, rank_argv, dry_run)


def launch(cfg: Config, rank_argv: Sequence[str], dry_run: bool = False) -> int:
    """Start, supervise and reap every task of a local cluster; return the job's exit code.
    With ``dry_run``, print the task commands (on ports free now) instead."""
    job = layout(cfg)
    workers = job.num_workers
    ports = cluster.free_ports(job.world_size, cfg.cluster.base_port)
    spec, roles = plan(cfg, ports)
    if dry_run:
        for role in roles:
            print(" ".join(launcher.rank_command(task_argv(rank_argv, spec, role))))
        return 0
    for role in roles:
        cluster.check_port_free(spec.address(role), f"{role.job} task {role.index}")
    procs: dict[Role, subprocess.Popen[bytes]] = {}
    pgid = 0

    def kill_all(signum: int = signal.SIGKILL) -> None:
        if pgid:
            try:
                os.killpg(pgid, signum)
            except ProcessLookupError:
                pass

    def forward(signum: int, _frame: object) -> None:
        kill_all(signum)

    forwarded = (signal.SIGINT, *stopping.STOP_SIGNALS)  # Slurm's warning is SIGUSR1
    previous = {s: signal.signal(s, forward) for s in forwarded}

    def start(role: Role) -> subprocess.Popen[bytes]:
        nonlocal pgid
        cmd = launcher.rank_command(task_argv(rank_argv, spec, role))
        proc = subprocess.Popen(
            cmd,
            env=child_env(os.environ),
            process_group=pgid,  # the first child founds the group, the rest join it
        )
        if not pgid:
            pgid = proc.pid
        procs[role] = proc
        return proc

    try:
        for role in roles:
            start(role)
        tolerate = lost_workers.tolerates(cfg, workers)
        needed = lost_workers.replicas(cfg, workers) if tolerate else 0
        grace = 2 * cfg.fault.heartbeat_interval_s + 2
        return _supervise(procs, start, cfg.fault.ps_max_restarts, needed, grace)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        kill_all()
        for proc in procs.values():
            proc.wait()


# A worker that stopped early on a signal ends as 128 + signal, after the whole job agreed
# to stop and the chief wrote its record: an orderly end, not a failure to tear down.
def root_cause(failed: list[tuple[Role, int]]) -> tuple[Role, int]:
    """The task to name when several have failed by the time the supervisor looks: one
    that did not exit with :data:`~hvdbench.components.watchdog.EXIT_FAULT`, which a rank
    returns when its watchdog saw *another* rank lost (a killed worker's peers can exit
    within the same poll as the worker itself); ps tasks, then workers, by index."""
    return min(failed, key=lambda rc: rc[1] == watchdog.EXIT_FAULT)


STOP_CODES = frozenset(stopping.exit_code(s) for s in stopping.STOP_SIGNALS)


def _supervise(
    procs: dict[Role, subprocess.Popen[bytes]],
    start: Callable[[Role], subprocess.Popen[bytes]],
    max_restarts: int,
    backup_needed: int = 0,
    chief_grace_s: float = 0.0,
) -> int:
    """Wait for the workers, restarting lost ps tasks; then for the ps tasks to leave.
    With ``backup_needed`` (the replicas_to_aggregate of a job that tolerates lost
    workers), a failed non-chief worker is left out while that many workers remain; when
    fewer remain, the chief gets ``chief_grace_s`` to notice through its watchdog and write
    its record (naming the lost workers) before the job is ended."""
    workers = [r for r in procs if not r.is_ps]
    lost: list[int] = []
    restarts = 0
    while True:
        codes = {r: p.poll() for r, p in procs.items()}
        for r in workers:
            code = codes[r]
            if (
                backup_needed
                and r.index != 0
                and r.index not in lost
                and code not in (None, 0)
                and code not in STOP_CODES
            ):
                lost.append(r.index)
                verdict = lost_workers.too_few(lost, len(workers), backup_needed)
                print(
                    f"hvdbench: worker task {r.index} exited with code {code}; "
                    + (
                        f"{verdict}: stopping the other tasks"
                        if verdict
                        else lost_workers.continuing(r.index, len(workers), lost, backup_needed)
                    ),
                    file=sys.stderr,
                    flush=True,
                )
                if verdict:
                    chief = procs[Role("worker", 0)]
                    try:
                        chief_code = chief.wait(timeout=chief_grace_s)
                    except subprocess.TimeoutExpired:
                        chief_code = None
                    return chief_code if chief_code else (code if code > 0 else 1)
        workers_left = [r for r in workers if r.index not in lost]
        codes_left = {r: c for r, c in codes.items() if r.is_ps or r.index not in lost}
        lost_ps = [(r, c) for r, c in codes.items() if r.is_ps and c not in (None, 0)]
        running = any(codes[r] is None for r in workers_left)
        if lost_ps and running and restarts < max_restarts:
            for role, code in lost_ps:
                restarts += 1
                print(
                    f"hvdbench: ps task {role.index} exited with code {code}; restarting it "
                    f"on its port (restart {restarts} of fault.ps_max_restarts={max_restarts})",
                    file=sys.stderr,
                    flush=True,
                )
                procs[role].wait()
                start(role)
            continue
        failed = [
            (r, c)
            for r, c in codes_left.items()
            if c not in (None, 0) and not (c in STOP_CODES and not r.is_ps)
        ]
        if failed:
            role, code = root_cause(failed)
            print(
                f"hvdbench: {role.job} task {role.index} exited with code {code}; "
                "stopping the other tasks",
                file=sys.stderr,
                flush=True,
            )
            return code if code and code > 0 else 1
        if all(codes[r] == 0 or codes[r] in STOP_CODES for r in workers_left):
            break
        time.sleep(0.1)
    stopped = max((c for r, c in codes.items() if r in workers_left and c), default=0)
    deadline = time.monotonic() + PS_GRACE_S
    while time.monotonic() < deadline:
        ps_codes = {r: p.poll() for r, p in procs.items() if r.is_ps}
        if all(c is not None for c in ps_codes.values()):
            bad = [(r, c) for r, c in ps_codes.items() if c != 0]
            if bad:
                role, ps_code = bad[0]
                print(f"hvdbench: ps task {role.index} exited with code {ps_code}", file=sys.stderr)
                return 1
            return stopped
        time.sleep(0.1)
    print(
        f"hvdbench: ps task(s) still running {PS_GRACE_S:g} s after the workers finished; killed",
        file=sys.stderr,
        flush=True,
    )
    return 1
