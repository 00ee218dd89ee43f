"""Where this process sits in the job: rank, size and local rank, read from the environment.

Pure functions of an environment mapping, so that they are tested without launching
anything, and usable before TensorFlow is imported (core binding must happen first).

Order of precedence (the first launcher whose rank and size are both set wins):

1. Horovod's own variables (``horovodrun``, or hvdbench's Gloo rendezvous under ``srun``);
2. Open MPI's ``OMPI_COMM_WORLD_*`` (``mpirun``, also inside an ``sbatch`` allocation);
3. Cray PALS (``mpiexec`` of Cray PALS/PBS): ``PALS_RANKID``, ``PALS_LOCAL_RANKID``,
   ``PALS_LOCAL_SIZE``; the size from ``PALS_SIZE`` or Cray PMI's ``PMI_SIZE``. Before the
   PMI variables, which PALS sets too;
4. MPICH's and Intel MPI's Hydra (``mpiexec``, ``mpiexec.hydra``): ``PMI_RANK``,
   ``PMI_SIZE``, ``MPI_LOCALRANKID``, ``MPI_LOCALNRANKS``. Hydra is told apart from ``srun
   --mpi=pmi2`` (which sets ``PMI_RANK`` too) by ``MPI_LOCALRANKID``; Cray PMI's
   ``PMI_LOCAL_RANK``/``PMI_LOCAL_SIZE`` are read the same way;
5. PMIx / PMI (``srun --mpi=pmix`` or ``pmi2``), sized and placed by Slurm;
6. ``SLURM_*`` only inside an ``srun`` step: ``mpirun`` inside ``sbatch`` leaves every
   rank with the batch step's ``SLURM_PROCID=0``, so the batch step's variables are ignored.

Without any of them this is a single process (rank 0 of 1).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    """This process's place in the job."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    source: str  # horovod | openmpi | pals | hydra | pmix | slurm | single
    hostname: str

    @property
    def launched(self) -> bool:
        """True when a launcher started this process as one rank of a job."""
        return self.source != "single"


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def in_srun_step(env: Mapping[str, str]) -> bool:
    """True inside an ``srun`` job step, where ``SLURM_PROCID`` is this task's own rank.

    The batch script of ``sbatch`` runs in the batch step, which has no numeric step id.
    """
    return env.get("SLURM_STEP_ID", "").strip().isdigit() and "SLURM_PROCID" in env


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand Slurm's compressed host list: ``n[1-3,07],gpu1`` -> ``[n1, n2, n3, n07, gpu1]``.

    Order is Slurm's (numeric within a range), never a string sort: node9 comes before node10.
    """
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?([^,\[]*)", nodelist):
        prefix, ranges, suffix = m.group(1), m.group(2), m.group(3)
        if not prefix and not ranges:
            continue
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                width = len(lo)
                hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(f"{prefix}{part}{suffix}")
    return hosts


def expand_tasks_per_node(spec: str) -> list[int]:
    """Expand ``SLURM_STEP_TASKS_PER_NODE``: ``2(x3),1`` -> ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ValueError(f"cannot parse tasks per node {spec!r}")
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts


def _slurm_local_size(env: Mapping[str, str]) -> int | None:
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    node = _int(env, "SLURM_NODEID")
    if not spec or node is None:
        return None
    counts = expand_tasks_per_node(spec)
    return counts[node] if node < len(counts) else None


def detect(env: Mapping[str, str], hostname: str | None = None) -> Topology:
    """This process's topology, from the launcher's environment variables."""
    host = hostname or env.get("SLURMD_NODENAME") or socket.gethostname()
    srun = in_srun_step(env)
    slurm_local = _int(env, "SLURM_LOCALID") if srun else None
    slurm_local_size = _slurm_local_size(env) if srun else None

    rank, size = _int(env, "HOROVOD_RANK"), _int(env, "HOROVOD_SIZE")
    if rank is not None and size is not None:
        local_rank = _int(env, "HOROVOD_LOCAL_RANK")
        local_size = _int(env, "HOROVOD_LOCAL_SIZE")
        return Topology(
            rank,
            size,
            local_rank if local_rank is not None else 0,
            local_size or 1,
            "horovod",
            host,
        )

    rank, size = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
    if rank is not None and size is not None:
        return Topology(
            rank,
            size,
            _int(env, "OMPI_COMM_WORLD_LOCAL_RANK") or 0,
            _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE") or 1,
            "openmpi",
            host,
        )

    rank = _int(env, "PALS_RANKID")
    size = _int(env, "PALS_SIZE", "PMI_SIZE")
    if rank is not None and size is not None:
        local_rank = _int(env, "PALS_LOCAL_RANKID", "PMI_LOCAL_RANK")
        local_size = _int(env, "PALS_LOCAL_SIZE", "PMI_LOCAL_SIZE")
        return Topology(rank, size, local_rank or 0, local_size or 1, "pals", host)

    rank, size = _int(env, "PMI_RANK"), _int(env, "PMI_SIZE")
    local_rank = _int(env, "MPI_LOCALRANKID", "PMI_LOCAL_RANK")
    if rank is not None and size is not None and local_rank is not None:
        local_size = _int(env, "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE")
        return Topology(rank, size, local_rank, local_size or 1, "hydra", host)

    rank = _int(env, "PMIX_RANK", "PMI_RANK")
    size = _int(env, "PMI_SIZE") or (
        _int(env, "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS") if srun else None
    )
    if rank is not None and size is not None:
        return Topology(rank, size, slurm_local or 0, slurm_local_size or 1, "pmix", host)

    if srun:
        rank = _int(env, "SLURM_PROCID")
        size = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
        if rank is not None and size is not None:
            return Topology(rank, size, slurm_local or 0, slurm_local_size or 1, "slurm", host)

    return Topology(0, 1, 0, 1, "single", host)
