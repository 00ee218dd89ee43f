"""The ``slurm.conf`` of a private Slurm cluster that hvdbench starts itself.

Two clusters use it: the one-node cluster on loopback of the Slurm test tier
(``tests/slurm/cluster.py``) and the multi-node cluster of network namespaces
(:mod:`hvdbench.testbed.netcluster`). Both run every daemon as root from one state directory,
with munge on a private socket, no accounting, no cgroups (``proctrack/pgid``), and
``SlurmdParameters=config_overrides`` so that a node may declare more CPUs than the
machine has (1 ps + 2 workers, or 4 ranks, on 2 cores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    cpus: int
    memory_mb: int


def render(
    *,
    name: str,
    root: Path,
    controller: tuple[str, str],
    ctld_port: int,
    slurmd_port: int,
    munge_socket: Path,
    nodes: Sequence[Node],
    partition: str,
    slurmd_timeout_s: int,
    message_timeout_s: int,
    task_plugin: str = "task/none",
) -> str:
    """The file's text. ``controller`` is slurmctld's (host name, address). The slurmd
    spool, pid and log files carry the node name (``%n``), so that several slurmd daemons
    on one machine keep apart. A job on a node that fails is not requeued: it ends as
    ``NODE_FAIL``, which is what a user of the cluster sees. ``task_plugin``
    ``task/affinity`` makes ``srun --cpu-bind``/``--cpus-per-task`` bind tasks, as at most
    sites (the one-node cluster uses it)."""
    host, address = controller
    node_lines = "\n".join(
        f"NodeName={n.name} NodeAddr={n.address} CPUs={n.cpus} RealMemory={n.memory_mb} "
        "State=UNKNOWN"
        for n in nodes
    )
    names = ",".join(n.name for n in nodes)
    return f"""\
ClusterName={name}
SlurmctldHost={host}({address})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin={task_plugin}
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PlugStackConfig={root}/plugstack.conf
SlurmctldTimeout=30
SlurmdTimeout={slurmd_timeout_s}
JobRequeue=0
InactiveLimit=0
MinJobAge=300
KillWait=5
OverTimeLimit=0
WaitTime=0
MessageTimeout={message_timeout_s}
{node_lines}
PartitionName={partition} Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""
