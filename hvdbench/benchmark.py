"""The benchmark loop of one rank: warm up, time each step, aggregate, record.

The loop only talks to the :class:`~hvdbench.modes.Mode` interface, so every mode reports
the same measurements in the same record.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hvdbench import metrics, modes, record, runtime, slurm, stopping
from hvdbench.config import Config
from hvdbench.errors import UsageError
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
    stop = stopping.install()  # before TensorFlow's slow import: a warning then is not fatal
    stopped = False
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

        every = cfg.stop.check_every
        done = 0  # steps run so far, warm-up included: the agreement schedule is loop-wide
        check_seconds = [0.0]  # time in stop agreements: harness overhead, not training

        def agreed_stop() -> bool:
            """The collective stop check, at the same steps on every rank."""
            if not stopping.should_check(done, every):
                return False
            t = time.perf_counter()
            agreed = mode.any_rank(stop.requested)
            check_seconds[0] += time.perf_counter() - t
            return agreed

        for _ in range(cfg.train.num_warmup_steps):
            mode.step()
            done += 1
            if agreed_stop():
                stopped = True
                break
        if not stopped:
            _say(mode, "Done warm up")
            _say(mode, metrics.progress_header())

        batch = cfg.train.per_device_batch_size
        times: list[float] = []
        losses: list[float] = []
        start = time.perf_counter()
        check_seconds[0] = 0.0
        for i in range(1, 0 if stopped else cfg.train.num_steps + 1):
            t0 = time.perf_counter()
            loss = mode.step()
            times.append(time.perf_counter() - t0)
            losses.append(loss)
            done += 1
            if metrics.should_display(i, cfg.train.display_every):
                _say(mode, metrics.progress_line(i, batch, times, loss))
            if agreed_stop():
                stopped = True
                break
        measured = time.perf_counter() - start - check_seconds[0]

        mine = metrics.RankMeasurement(
            mode.worker_index, topo.hostname, batch, tuple(times), measured
        )
        gathered = mode.gather(
            {"measurement": mine.to_dict(), "rank": rank_info, "stop_signal": stop.signum}
        )
        # Any rank's signal stands for all: with a signal only some ranks received, every
        # rank (and the record) still names it, and exits with the same code.
        signals = [g.get("stop_signal") for g in gathered] if gathered else [stop.signum]
        stop_info = stop_details(stopped, done, cfg, len(times), signals)
        stop_info["agreement_seconds_excluded"] = check_seconds[0]
        if stopped:
            _say(
                mode,
                f"hvdbench: stopping on {stop_info['signal']} after {len(times)} of "
                f"{cfg.train.num_steps} measured steps",
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
            totals = metrics.aggregate(ranks) if times else None
            if totals is not None:
                for line in metrics.summary_lines(totals):
                    print(line, flush=True)
            path = write_record(cfg, mode, argv, gathered, totals, losses, stop_info)
            print(f"hvdbench: record written to {path}", flush=True)
        # No rank leaves before the record is on disk: a launcher that ends the job at the
        # first exit (srun --kill-on-bad-exit, mpirun after a non-zero code) must not cut
        # the chief short.
        mode.any_rank(False)
    finally:
        mode.shutdown()
    if stopped:
        return stopping.exit_code(stop_info["signum"])
    return 0


def stop_details(
    stopped: bool,
    steps_done: int,
    cfg: Config,
    measured: int,
    signals_by_rank: list[int | None],
) -> dict[str, Any]:
    """What the record says about an early stop (``None`` signal when the run completed).

    The signal is the first one a rank received, in rank order (SIGTERM if the ranks
    stopped without one being known, which only a mode without a full gather can cause).
    """
    seen = [s for s in signals_by_rank if s is not None]
    signum = (seen[0] if seen else int(signal.SIGTERM)) if stopped else None
    return {
        "stopped_early": stopped,
        "signal": stopping.signal_name(signum) if signum else None,
        "signum": signum,
        "signals_by_rank": [stopping.signal_name(s) if s else None for s in signals_by_rank],
        "steps_done": steps_done,
        "measured_steps_done": measured,
        "measured_steps_planned": cfg.train.num_steps,
        "warmup_steps_planned": cfg.train.num_warmup_steps,
        "check_every": cfg.stop.check_every,
    }


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
    totals: metrics.Totals | None,
    chief_losses: list[float],
    stop_info: dict[str, Any] | None = None,
) -> Path:
    """Write the run's record into ``output.dir`` under a new unique name.

    A run stopped by a signal is ``"status": "incomplete"`` with the steps it did; its
    totals are ``None`` when it stopped before any measured step.
    """
    stopped = bool(stop_info and stop_info["stopped_early"])
    data = {
        "schema_version": record.RECORD_SCHEMA_VERSION,
        "status": "incomplete" if stopped else "complete",
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
        "slurm": slurm.job_info(os.environ),
        "stop": stop_info,
        "totals": totals.to_dict() if totals is not None else None,
        "per_rank": [g["measurement"] for g in gathered],
        "chief_losses": chief_losses,
    }
    name = record.record_name(cfg.mode.name, cfg.model.name, len(gathered))
    return record.write_atomic(Path(cfg.output.dir) / name, data)
