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
from hvdbench.hooks import RunHooks
from hvdbench.topology import Topology


def check_world_size(cfg: Config, topo: Topology) -> None:
    """A nonzero ``launch.np`` must match what the launcher started."""
    if not cfg.launch.np or not topo.launched:
        return
    expected = modes.get(cfg.mode.name).world_size(cfg)
    if topo.size != expected:
        raise UsageError(
            f"launch.np: the launcher started {topo.size} processes but mode "
            f"{cfg.mode.name} with launch.np={cfg.launch.np} needs {expected}; "
            f"set --np to match or --launch.np=0 to take the launcher's"
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
        f"Data:        {cfg.data.source}" + (f" from {cfg.data.dir}" if cfg.data.dir else ""),
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
        hooks = RunHooks(cfg, mode)
        resumed = hooks.restore()  # the chief's state, before initialize() shares it
        mode.initialize()
        for line in banner(cfg, mode, rank_info) + resumed:
            _say(mode, line)

        for _ in range(cfg.train.num_warmup_steps):
            hooks.before_step()
            t0 = time.perf_counter()
            hooks.after_step(mode.step(), time.perf_counter() - t0)
        _say(mode, "Done warm up")
        if hooks.compare_synthetic:
            synthetic = hooks.measure_synthetic()
            _say(
                mode,
                f"Synthetic data: {metrics.perf_timing(cfg.train.per_device_batch_size, synthetic)[0]:.1f} images/sec per device (for comparison)",
            )
        _say(mode, metrics.progress_header())

        batch = cfg.train.per_device_batch_size
        times: list[float] = []
        losses: list[float] = []
        overhead = hooks.overhead
        start = time.perf_counter()
        for i in range(1, cfg.train.num_steps + 1):
            hooks.before_step()
            t0 = time.perf_counter()
            loss = mode.step()
            times.append(time.perf_counter() - t0)
            losses.append(loss)
            hooks.after_step(loss, times[-1])
            if metrics.should_display(i, cfg.train.display_every):
                _say(mode, metrics.progress_line(i, batch, times, loss))
        # Checkpoint saves and summaries happen between steps: not part of the measurement.
        measured = time.perf_counter() - start - (hooks.overhead - overhead)
        hooks.finish()

        mine = metrics.RankMeasurement(
            mode.worker_index, topo.hostname, batch, tuple(times), measured
        )
        gathered = mode.gather(
            {
                "measurement": mine.to_dict(),
                "rank": rank_info,
                "synthetic_step_times": hooks.synthetic_times,
            }
        )
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
            extra = hooks.record_fields(gathered, totals)
            if "input_pipeline" in extra:
                print(input_pipeline_line(extra["input_pipeline"]), flush=True)
            path = write_record(cfg, mode, argv, gathered, totals, losses, extra)
            print(f"hvdbench: record written to {path}", flush=True)
    finally:
        mode.shutdown()
    return 0


def input_pipeline_line(p: dict[str, Any]) -> str:
    return (
        f"input pipeline: real {p['real_step_time_mean'] * 1000:.1f} ms/step vs synthetic "
        f"{p['synthetic_step_time_mean'] * 1000:.1f} ms/step "
        f"(x{p['real_over_synthetic_step_time']:.2f}): "
        + ("the input is the bottleneck" if p["input_bound"] else "the input keeps up")
    )


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
    extra: dict[str, Any] | None = None,
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
        **(extra or {}),
    }
    name = record.record_name(cfg.mode.name, cfg.model.name, totals.num_ranks)
    return record.write_atomic(Path(cfg.output.dir) / name, data)
