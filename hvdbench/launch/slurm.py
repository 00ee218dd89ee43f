"""Slurm: the ``sbatch`` and ``srun`` command lines (pure builders) and the job's identity.

Builders return ``list[str]`` and touch nothing, so tests assert the exact argv; ``submit``
is the one thin step that runs ``sbatch``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hvdbench.errors import UsageError
from hvdbench.launch.topology import expand_nodelist, in_srun_step

# What Slurm sends before the time limit, and how long before (seconds). Slurm may send it
# up to 60 s earlier than asked, so the margin only has to cover writing the record.
DEFAULT_SIGNAL = "USR1@90"
PMI_CHOICES = ("pmix", "pmi2", "none")
# Seconds srun lets the other tasks of a step run on after the first one ends.
STEP_WAIT_SECONDS = 60


@dataclass(frozen=True)
class JobRequest:
    """What ``hvdbench submit`` asks Slurm for."""

    nodes: int
    ntasks_per_node: int
    partition: str = ""
    time: str = ""
    account: str = ""
    job_name: str = "hvdbench"
    signal: str = DEFAULT_SIGNAL
    output: str = ""
    cpus_per_task: int = 0
    gpus_per_node: str = ""  # N or TYPE:N
    gres: str = ""  # e.g. gpu:4 or gpu:a100:4,nvme:1
    exclusive: bool = False
    qos: str = ""
    constraint: str = ""
    reservation: str = ""
    ntasks: int = 0  # 0: nodes x ntasks_per_node; else exactly this many (a ps job's np + num_ps)
    extra: tuple[str, ...] = ()  # --sbatch-arg: anything else, passed as given

    @property
    def capacity(self) -> int:
        """Tasks the allocation holds: ``nodes x ntasks_per_node``."""
        return self.nodes * self.ntasks_per_node


_TIME = re.compile(r"^(\d+|\d+:\d{2}(:\d{2})?|\d+-\d+(:\d{2}(:\d{2})?)?|UNLIMITED|INFINITE)$")
_SIGNAL = re.compile(r"^(B:|R:)?[A-Z0-9]+(@\d+)?$")
_GPUS = re.compile(r"^([A-Za-z0-9_.-]+:)?\d+$")
_GRES = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*(,[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*)*$")
_WORD = re.compile(r"^[^\s=]+$")
# Options hvdbench sets itself: through --sbatch-arg they would contradict what it asked for.
_OWN_OPTIONS = ("--nodes", "--ntasks", "--ntasks-per-node", "--parsable", "--wrap", "-N", "-n")


def validate_request(req: JobRequest) -> None:
    """One-line errors for values sbatch would reject later, after queueing."""
    if req.nodes < 1:
        raise UsageError(f"--nodes: must be >= 1, got {req.nodes}")
    if req.ntasks_per_node < 1:
        raise UsageError(f"--ntasks-per-node: must be >= 1, got {req.ntasks_per_node}")
    if req.time and not _TIME.match(req.time):
        raise UsageError(
            f"--time: cannot read {req.time!r}; expected minutes, MM:SS, HH:MM:SS or D-HH:MM"
        )
    if req.signal and not _SIGNAL.match(req.signal):
        raise UsageError(
            f"--signal: cannot read {req.signal!r}; expected e.g. USR1@90 or B:USR1@90"
        )
    if req.cpus_per_task < 0:
        raise UsageError(
            f"--cpus-per-task: must be >= 1 (0: Slurm's default), got {req.cpus_per_task}"
        )
    if req.gpus_per_node and not _GPUS.match(req.gpus_per_node):
        raise UsageError(
            f"--gpus-per-node: cannot read {req.gpus_per_node!r}; expected N or TYPE:N (a100:4)"
        )
    if req.gres and not _GRES.match(req.gres):
        raise UsageError(f"--gres: cannot read {req.gres!r}; expected e.g. gpu:4 or gpu:a100:4")
    for name, value in (("--qos", req.qos), ("--constraint", req.constraint),
                        ("--reservation", req.reservation)):  # fmt: skip
        if value and not re.match(r"^\S+$", value):
            raise UsageError(f"{name}: {value!r} has blanks in it")
    if req.ntasks < 0:
        raise UsageError(f"ntasks: must be >= 0, got {req.ntasks}")
    if req.ntasks > req.capacity:
        raise UsageError(
            f"--nodes {req.nodes} x --ntasks-per-node {req.ntasks_per_node} holds "
            f"{req.capacity} task(s), fewer than the {req.ntasks} the job needs; raise "
            "--nodes or --ntasks-per-node"
        )
    for arg in req.extra:
        if not arg.startswith("-"):
            raise UsageError(
                f"--sbatch-arg: {arg!r} is not an sbatch option; pass one option a time, "
                "with its value after '=': --sbatch-arg=--mail-type=END"
            )
        name = arg.split("=", 1)[0]
        if name in _OWN_OPTIONS:
            raise UsageError(
                f"--sbatch-arg: {name} is set by hvdbench submit itself (--nodes, "
                "--ntasks-per-node, and the mode's task count)"
            )


def sbatch_command(
    req: JobRequest,
    script: str = "",
    script_args: Sequence[str] = (),
    *,
    wrap: Sequence[str] = (),
    sbatch: str = "sbatch",
    parsable: bool = True,
) -> list[str]:
    """``sbatch --nodes N --ntasks-per-node K [--partition P] [--time T] [--account A] ...``.

    Then, in this order and only when set: ``--signal``, ``--output``, ``--ntasks``,
    ``--cpus-per-task``, ``--gpus-per-node``, ``--gres``, ``--exclusive``, ``--qos``,
    ``--constraint``, ``--reservation``, and the ``--sbatch-arg`` options as given.
    Options on the command line override the script's ``#SBATCH`` lines, so one script
    serves any size. With ``wrap`` (an argv) the job runs that command instead of a script.
    """
    if bool(script) == bool(wrap):
        raise ValueError("sbatch_command needs exactly one of script and wrap")
    cmd = [sbatch]
    if parsable:
        cmd.append("--parsable")
    cmd += [f"--job-name={req.job_name}", f"--nodes={req.nodes}"]
    cmd += [f"--ntasks-per-node={req.ntasks_per_node}"]
    # optional flags in a fixed order: a value adds --name=value, True adds --name
    optional = (
        ("partition", req.partition), ("time", req.time), ("account", req.account),
        ("signal", req.signal), ("output", req.output), ("ntasks", req.ntasks),
        ("cpus-per-task", req.cpus_per_task), ("gpus-per-node", req.gpus_per_node),
        ("gres", req.gres), ("exclusive", req.exclusive), ("qos", req.qos),
        ("constraint", req.constraint), ("reservation", req.reservation),
    )  # fmt: skip
    for name, value in optional:
        if value is True:
            cmd.append(f"--{name}")
        elif value:
            cmd.append(f"--{name}={value}")
    cmd += list(req.extra)
    if wrap:
        return cmd + [f"--wrap={shlex.join(wrap)}"]
    return cmd + [script, *script_args]


def srun_command(
    ntasks: int,
    command: Sequence[str],
    *,
    nodes: int = 0,
    mpi: str = "pmix",
    srun: str = "srun",
    wait_seconds: int = STEP_WAIT_SECONDS,
) -> list[str]:
    """``srun --ntasks=N [--nodes=M] --mpi=PMI --kill-on-bad-exit=0 --wait=S command...``.

    One step no bigger than it needs (one point of a packed sweep). Not
    ``--kill-on-bad-exit=1``: after a stop on a signal every rank exits with 128 + signal,
    and killing the step at the first such exit would cut the others short. ``--wait``
    still ends a step whose ranks hang after one of them died.
    """
    if mpi not in PMI_CHOICES:
        raise UsageError(f"HVDBENCH_PMI / --mpi: {mpi!r} is not one of: {', '.join(PMI_CHOICES)}")
    cmd = [srun, f"--ntasks={ntasks}"]
    if nodes:
        cmd.append(f"--nodes={nodes}")
    cmd += [f"--mpi={mpi}", "--kill-on-bad-exit=0", f"--wait={wait_seconds}"]
    return cmd + list(command)


def in_allocation(env: Mapping[str, str]) -> bool:
    """Inside a Slurm job (batch script or salloc shell) but not inside one of its steps."""
    return bool(env.get("SLURM_JOB_ID")) and not in_srun_step(env)


def job_info(env: Mapping[str, str]) -> dict[str, object] | None:
    """The job's identity for the record: job id, step, node list (expanded), name."""
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        return None
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    step = env.get("SLURM_STEP_ID", "").strip()
    return {
        "job_id": job_id,
        "step_id": step if step else "batch",
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "job_name": env.get("SLURM_JOB_NAME"),
        "partition": env.get("SLURM_JOB_PARTITION"),
        "account": env.get("SLURM_JOB_ACCOUNT"),
        "cluster": env.get("SLURM_CLUSTER_NAME"),
        "node_list": nodelist,
        "nodes": expand_nodelist(nodelist) if nodelist else [],
        "num_nodes": int(env["SLURM_JOB_NUM_NODES"])
        if env.get("SLURM_JOB_NUM_NODES", "").isdigit()
        else None,
    }


def parse_job_id(sbatch_stdout: str) -> str:
    """The job id from ``sbatch --parsable`` output (``123`` or ``123;cluster``)."""
    first = sbatch_stdout.strip().splitlines()[-1] if sbatch_stdout.strip() else ""
    job = first.split(";", 1)[0].strip()
    if not job.isdigit():
        raise UsageError(f"sbatch did not return a job id: {sbatch_stdout.strip()!r}")
    return job


def submit(cmd: Sequence[str], env: Mapping[str, str]) -> str:
    """Run ``sbatch`` and return the job id; its error becomes one line."""
    exe = shutil.which(cmd[0], path=env.get("PATH")) or cmd[0]
    try:
        out = subprocess.run(
            [exe, *cmd[1:]], capture_output=True, text=True, env=dict(env), timeout=120
        )
    except FileNotFoundError:
        raise UsageError(
            "sbatch not found: run on a Slurm login node (or `make install-slurm`)"
        ) from None
    except subprocess.TimeoutExpired:
        raise UsageError("sbatch did not answer within 120 s") from None
    if out.returncode != 0:
        msg = " ".join(out.stderr.split()) or f"exit code {out.returncode}"
        raise UsageError(f"sbatch refused the job: {msg}")
    return parse_job_id(out.stdout)
