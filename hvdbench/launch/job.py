"""The job's arithmetic, in one place: ps tasks, workers, world size, roles and core slots.

A job has ``num_ps`` parameter-server tasks (``ps.num_ps`` in the ps modes, none in the
others) and ``num_workers`` compute ranks (``launch.np``, the explicit cluster's worker
list, or what the launcher started). Its processes are the two together; the first
``num_ps`` ranks are the ps tasks and worker 0 is the chief. Every count, role and core
slot is read from a :class:`JobLayout`, built once from the config (before a launch) and
checked against the launcher's ranks (inside one). Every error shows the arithmetic:
``launch.np: ps(1) + workers(4) != ranks(6)``.

Pure, no TensorFlow, so it runs before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hvdbench.config import PS_MODES, Config, parse_host_list
from hvdbench.errors import UsageError
from hvdbench.launch.topology import Topology


@dataclass(frozen=True)
class Role:
    """A process's task in the job: a ps task or a worker, and its index."""

    job: str  # "ps" or "worker"
    index: int

    @property
    def is_ps(self) -> bool:
        return self.job == "ps"


@dataclass(frozen=True)
class JobLayout:
    """Who is who in a job: how many ps tasks and workers, and each rank's place."""

    mode: str
    num_ps: int
    num_workers: int  # 0: not known before the launcher's ranks are (launch.np = 0)
    np: int = 0  # launch.np as given, for the messages
    worker_hosts: tuple[str, ...] = ()  # an explicit cluster's workers, host:port
    explicit_role: Role | None = None  # this process's role in an explicit cluster

    @classmethod
    def plan(cls, cfg: Config) -> JobLayout:
        """The job the config asks for, before anything is launched."""
        num_ps = cfg.ps.num_ps if cfg.mode.name in PS_MODES else 0
        workers = tuple(parse_host_list(cfg.cluster.worker_hosts, "cluster.worker_hosts"))
        role = Role(cfg.cluster.job_name, cfg.cluster.task_index) if cfg.cluster.job_name else None
        return cls(
            mode=cfg.mode.name,
            num_ps=num_ps,
            num_workers=len(workers) or cfg.launch.np,
            np=cfg.launch.np,
            worker_hosts=workers,
            explicit_role=role,
        )

    @classmethod
    def of_rank(cls, cfg: Config, topo: Topology) -> JobLayout:
        """The job this process is in: the plan, checked against the launcher's ranks
        when a launcher started it (and its worker count taken from them with
        ``launch.np = 0``)."""
        layout = cls.plan(cfg)
        if not topo.launched:
            return dataclasses.replace(layout, num_workers=layout.num_workers or 1)
        if layout.explicit_role is not None:  # the host lists say who is who
            if layout.np:
                layout.launched_as(topo.size)
            return layout
        return layout.launched_as(topo.size)

    @property
    def world_size(self) -> int:
        """The processes of the job: its ps tasks and its workers."""
        return self.num_ps + self.num_workers

    def formula(self, workers: int | None = None) -> str:
        """How the processes add up: ``ps(1) + workers(4)``, or ``workers(4)``."""
        w = self.num_workers if workers is None else workers
        return f"ps({self.num_ps}) + workers({w})" if self.num_ps else f"workers({w})"

    def launched_as(self, size: int) -> JobLayout:
        """This layout as a launcher of ``size`` ranks runs it: a given ``launch.np`` must
        match, and ``launch.np = 0`` takes the workers from the ranks."""
        if self.np:
            if self.world_size != size:
                raise UsageError(
                    f"launch.np: {self.formula()} != ranks({size}): the launcher started "
                    f"{size} processes but mode {self.mode} with launch.np={self.np} needs "
                    f"{self.world_size}; set --np to match or --launch.np=0 to take the "
                    "launcher's"
                )
            return self
        if size <= self.num_ps:
            raise UsageError(
                f"launch.np: {self.formula(size - self.num_ps)} leaves no worker among "
                f"ranks({size}); start at least {self.num_ps + 1} processes"
            )
        return dataclasses.replace(self, num_workers=size - self.num_ps)

    def role(self, rank: int) -> Role:
        """Rank ``rank``'s role when roles come from ranks: the first ``num_ps`` ranks are
        ps tasks, the rest workers."""
        if rank < self.num_ps:
            return Role("ps", rank)
        return Role("worker", rank - self.num_ps)

    def roles(self) -> list[Role]:
        """Every task of the job, ps first, in rank order."""
        return [self.role(r) for r in range(self.world_size)]

    def core_slot(self, rank: int, local_rank: int, local_size: int) -> tuple[int, int]:
        """(index, count) of this process among the workers that split its node's cores;
        a ps task gets (0, 1): every core, unbound.

        A ps task's work (serving the variables, applying updates) comes in bursts while
        the workers wait for it, so it floats over the cores the workers hold, rather than
        taking a slice of its own from them or, with fewer cores than tasks, sharing one
        core with one worker while the other worker has a core alone.

        * Explicit cluster (also hvdbench's own local launcher): the workers whose address
          has this worker's host split the cores, in task order.
        * Roles from ranks (mpirun, srun): the first ``num_ps`` ranks are the ps tasks;
          with the launcher's block placement (consecutive ranks fill a node), the ps ranks
          on this node come before its workers, so the worker's slot is its local rank less
          those. Without ps tasks that is the local rank and size.
        """
        if self.explicit_role is not None:
            if self.explicit_role.is_ps:
                return (0, 1)
            me = self.explicit_role.index
            host = self.worker_hosts[me].rpartition(":")[0]
            here = [i for i, a in enumerate(self.worker_hosts) if a.rpartition(":")[0] == host]
            return (here.index(me), len(here))
        if rank < self.num_ps:
            return (0, 1)
        first = rank - local_rank  # the node's first rank, with block placement
        ps_here = min(max(self.num_ps - first, 0), local_size)
        index, count = local_rank - ps_here, local_size - ps_here
        return (index, count) if 0 <= index < count else (local_rank, local_size)
