"""When a lost worker may be left out: synchronous training with backup workers.

``SyncReplicasOptimizer`` with ``ps.replicas_to_aggregate`` below the number of workers
applies each global step as soon as that many gradients arrived and drops the rest
(backup workers, Chen et al., "Revisiting distributed synchronous SGD"). Such a job does
not need every worker, so a non-chief worker that dies need not end it: the watchdog, the
chief's end-of-run collection, the drain, the final barrier and the local launcher then
count only the live workers. Everywhere else a lost worker still ends the job.

This module is the policy only (no TensorFlow): who decides is the config, what is said is
here, so that the launcher and the ranks say the same thing.
"""

from __future__ import annotations

from hvdbench.config import PS_MODES, Config


def replicas(cfg: Config, num_workers: int) -> int:
    """Gradients aggregated per synchronous step (0 in the config: all workers)."""
    return cfg.ps.replicas_to_aggregate or num_workers


def tolerates(cfg: Config, num_workers: int) -> bool:
    """Whether a lost non-chief worker is left out rather than ending the job: a
    synchronous ps mode with backup workers, the watchdog on (it is what notices), and
    ``fault.tolerate_lost_workers``."""
    return (
        cfg.fault.tolerate_lost_workers
        and cfg.fault.watchdog
        and cfg.mode.name in PS_MODES
        and cfg.ps.sync
        and replicas(cfg, num_workers) < num_workers
    )


def too_few(lost: list[int], num_workers: int, needed: int) -> str | None:
    """The message that ends the job when the workers left cannot fill a step; else None."""
    live = num_workers - len(set(lost))
    if live >= needed:
        return None
    names = ", ".join(f"worker {i}" for i in sorted(set(lost)))
    return (
        f"lost {names}: {live} of {num_workers} workers left, fewer than "
        f"ps.replicas_to_aggregate={needed} needed for a synchronous step; ending the job"
    )


def continuing(index: int, num_workers: int, lost: list[int], needed: int) -> str:
    """What is said when the job goes on without worker ``index``."""
    live = num_workers - len(set(lost))
    return (
        f"worker {index} was lost; the job continues with {live} of {num_workers} workers "
        f"(backup workers: ps.replicas_to_aggregate={needed}, fault.tolerate_lost_workers)"
    )
