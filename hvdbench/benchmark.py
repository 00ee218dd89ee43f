"""The benchmark loop of one rank: warm up, time each step, aggregate, record.

The loop only talks to the :class:`~hvdbench.modes.Mode` interface, so every mode reports
the same measurements in the same record.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from hvdbench import metrics, modes, record, runtime
from hvdbench.config import Config
from hvdbench.errors import UsageError
from hvdbench.topology import Topology


def check_world_size(cfg: Config, topo: Topology) -> None:
    """A nonzero ``launch.np`` must match what the launcher started."""
    if not cfg.launch.np or not topo.launched:
        return
    mode_cls = modes.get(cfg.mode.name)
    expected = mode_cls.world_size(cfg)
    if topo.size != expected:
        raise UsageError(
            f"launch.np: {mode_cls.world_formula(cfg, cfg.launch.np)} != ranks({topo.size}): "
            f"the launcher started {topo.size} processes but mode {cfg.mode.name} with "
            f"launch.np={cfg.launch.np} needs {expected}; set --np to match or "
            f"--launch.np=0 to take the launcher's"
        )


def _say(mode: modes.Mode, text: str) -> None:
    if mode.is_chief:
        print(text, flush=True)


def banner(cfg: Config, mode: modes.Mode, rank_info: dict[str, Any]) -> list[str]:
    from hvdbench import models

    n = mode.num_workers
    b = cfg.train.per_device_batch_size
    return [
        f"hvdbench: mode {cfg.mode.name}, {n} compute rank(s)",
        f"Model:       {cfg.model.name} (input {'x'.join(map(str, models.input_shape(cfg)))}, "
        f"{models.num_classes(cfg)} classes)",
        f"Batch size:  {b * n} global; {b} per device",
        f"Data:        {cfg.data.source}",
        f"Optimizer:   {cfg.train.optimizer}, learning rate {cfg.train.learning_rate}, "
        f"weight decay {cfg.train.weight_decay}",
        f"Precision:   {cfg.train.mixed_precision}; XLA {'on' if cfg.train.jit_compile else 'off'}",
        f"Steps:       {cfg.train.num_warmup_steps} warm-up, {cfg.train.num_steps} measured",
        f"Threads:     intra-op {rank_info['intra_op_threads']}, inter-op "
        f"{rank_info['inter_op_threads'] or 'default'}; chief's cpus {rank_info['cpus']}",
    ]


def versions() -> dict[str, Any]:
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    return {
        "hvdbench": __import__("hvdbench").__version__,
        "python": record.python_version(),
        "tensorflow": tf.__version__,
        "mpi": record.mpi_version(),
        "cuda": build.get("cuda_version"),
        "cudnn": build.get("cudnn_version"),
        "platform": platform.platform(),
    }


def run_rank(cfg: Config, topo: Topology, argv: list[str]) -> int:
    """Run the benchmark as one rank of the job; the chief prints and writes the record."""
    check_world_size(cfg, topo)
    cores = runtime.bind_cores(cfg, topo)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rank_info: dict[str, Any] = runtime.configure_tensorflow(cfg, topo, cores)
    rank_info.update(
        rank=topo.rank, host=topo.hostname, local_rank=topo.local_rank, local_size=topo.local_size
    )

    mode = modes.get(cfg.mode.name)(cfg, topo)
    mode.setup()
    try:
        mode.build()
        mode.initialize()
        for line in banner(cfg, mode, rank_info):
            _say(mode, line)

        for _ in range(cfg.train.num_warmup_steps):
            mode.step()
        _say(mode, "Done warm up")
        _say(mode, metrics.progress_header())

        batch = cfg.train.per_device_batch_size
        times: list[float] = []
        losses: list[float] = []
        start = time.perf_counter()
        for i in range(1, cfg.train.num_steps + 1):
            t0 = time.perf_counter()
            loss = mode.step()
            times.append(time.perf_counter() - t0)
            losses.append(loss)
            if metrics.should_display(i, cfg.train.display_every):
                _say(mode, metrics.progress_line(i, batch, times, loss))
        measured = time.perf_counter() - start

        mine = metrics.RankMeasurement(
            mode.worker_index, topo.hostname, batch, tuple(times), measured
        )
        gathered = mode.gather({"measurement": mine.to_dict(), "rank": rank_info})
        if mode.is_chief:
            assert gathered is not None
            ranks = [
                metrics.RankMeasurement(
                    g["measurement"]["rank"],
                    g["measurement"]["host"],
                    g["measurement"]["batch_size"],
                    tuple(g["measurement"]["step_times"]),
                    g["measurement"]["measured_seconds"],
                )
                for g in gathered
            ]
            totals = metrics.aggregate(ranks)
            for line in metrics.summary_lines(totals):
                print(line, flush=True)
            path = write_record(cfg, mode, argv, gathered, totals, losses)
            print(f"hvdbench: record written to {path}", flush=True)
    finally:
        mode.shutdown()
    return 0


def topology_summary(rank_infos: list[dict[str, Any]]) -> dict[str, Any]:
    hosts: dict[str, int] = {}
    for r in rank_infos:
        hosts[r["host"]] = hosts.get(r["host"], 0) + 1
    return {
        "world_size": len(rank_infos),
        "hosts": list(hosts),
        "local_sizes": hosts,
        "ranks": rank_infos,
    }


def write_record(
    cfg: Config,
    mode: modes.Mode,
    argv: list[str],
    gathered: list[dict[str, Any]],
    totals: metrics.Totals,
    chief_losses: list[float],
) -> Path:
    """Write the run's record into ``output.dir`` under a new unique name."""
    data = {
        "schema_version": record.RECORD_SCHEMA_VERSION,
        "status": "complete",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": cfg.mode.name,
        "model": cfg.model.name,
        "config": cfg.to_dict(),
        "command_line": [sys.executable, "-m", "hvdbench", *argv],
        "git_sha": record.git_sha(),
        "topology": topology_summary([g["rank"] for g in gathered]),
        "mode_details": mode.details(),
        "versions": versions(),
        "environment": record.captured_env(os.environ),
        "totals": totals.to_dict(),
        "per_rank": [g["measurement"] for g in gathered],
        "chief_losses": chief_losses,
    }
    name = record.record_name(cfg.mode.name, cfg.model.name, totals.num_ranks)
    return record.write_atomic(Path(cfg.output.dir) / name, data)
