"""The benchmark loop of one rank: warm up, time each step, aggregate, record.

The loop only talks to the :class:`~hvdbench.modes.Mode` interface, so every mode reports
the same measurements in the same record.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from hvdbench import models, modes, tfcompat
from hvdbench.components import metrics, record, runtime, startup, stopping, watchdog, xla
from hvdbench.config import MODE_CAPABILITIES, Config
from hvdbench.launch import netinfo, slurm
from hvdbench.launch.job import JobLayout
from hvdbench.launch.topology import Topology
from hvdbench.modes.grpc import lost_workers
from hvdbench.run.hooks import RunHooks


def _say(mode: modes.Mode, text: str) -> None:
    if mode.is_chief:
        print(text, flush=True)


def banner(cfg: Config, mode: modes.Mode, rank_info: dict[str, Any]) -> list[str]:
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
        f"Precision:   {cfg.train.mixed_precision}; {xla.banner_text(cfg.train.jit_compile)}",
        f"Steps:       {cfg.train.num_warmup_steps} warm-up, {cfg.train.num_steps} measured",
        f"Threads:     intra-op {rank_info['intra_op_threads']}, inter-op "
        f"{rank_info['inter_op_threads'] or 'default'}; chief's cpus {rank_info['cpus']}",
        f"Allocator:   {rank_info['allocator']['cpu_allocator']} (host memory)",
    ]


def versions() -> dict[str, Any]:
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    return {
        "hvdbench": __import__("hvdbench").__version__,
        "horovod": record.installed_version("horovod"),
        "python": record.python_version(),
        "tensorflow": tf.__version__,
        "keras": tfcompat.keras_info(),
        "mpi": record.mpi_version(),
        "cuda": build.get("cuda_version"),
        "cudnn": build.get("cudnn_version"),
        "platform": platform.platform(),
    }


def _gpu_names() -> list[str]:
    """The GPUs TensorFlow sees in this process (after any per-rank pinning)."""
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def run_rank(cfg: Config, topo: Topology, argv: list[str]) -> int:
    """Run the benchmark as one rank of the job; the chief prints and writes the record.

    Four steps: set up this process and join the job (:func:`_set_up_process`,
    :func:`_prepare`, :func:`_meet`), measure the steps (:func:`_measure`), collect every
    rank's measurements (:func:`_collect`) and record them (:func:`_record`, the chief).
    """
    stop = stopping.install()  # before TensorFlow's slow import: a warning then is not fatal
    stopped = False
    probe = xla.Probe.start(cfg.train.jit_compile, os.environ)  # before XLA's first compile
    layout, rank_info = _set_up_process(cfg, topo)
    mode = modes.get(cfg.mode.name)(cfg, topo, layout)
    startup.phase(f"joining the job (mode {cfg.mode.name})")
    mode.setup()
    rank_info["network"] = netinfo.describe(os.environ, topo)  # after setup: Gloo's iface
    dog: watchdog.Watchdog | None = None
    try:
        hooks, resumed = _prepare(cfg, mode, rank_info, probe)
        progress = watchdog.Progress()
        run = Run(cfg, mode, argv)
        dog = _watchdog(cfg, topo, mode, run, progress)
        _meet(cfg, topo, mode, run, dog, rank_info, resumed)
        startup.done()  # from here on fault.heartbeat_timeout_s and the step deadline

        try:
            measured, stopped, done, agreement = _measure(cfg, mode, run, progress, hooks, stop)
        except Exception as e:  # a collective failed: a peer died or the job is torn down
            _fail(run, dog, e)

        gathered = _collect(cfg, topo, mode, run, hooks, stop, measured)
        dog.stop()
        stop_info = _stop_info(cfg, mode, run, hooks, gathered, stop, stopped, done, agreement)
        if mode.is_chief:
            assert gathered is not None
            _record(cfg, mode, run, hooks, gathered, stop_info, stopped)
        # No rank leaves before the record is on disk: a launcher that ends the job at the
        # first exit (srun --kill-on-bad-exit, mpirun after a non-zero code) must not cut
        # the chief short.
        mode.any_rank(False)
    finally:
        startup.done()
        probe.close()
        if dog is not None:
            dog.stop()
        mode.shutdown()
    if stopped:
        return stopping.exit_code(stop_info["signum"])
    return 0


def _set_up_process(cfg: Config, topo: Topology) -> tuple[JobLayout, dict[str, Any]]:
    """This process before it joins the job: its place in the job (checked against the
    launcher's ranks), the start-up guard, its cores and TensorFlow's thread pools.
    Returns the layout and the facts about this rank that go into the record."""
    layout = JobLayout.of_rank(cfg, topo)  # checks launch.np against the launcher's ranks
    startup.begin(
        f"{cfg.cluster.job_name} task {cfg.cluster.task_index}"
        if cfg.cluster.job_name
        else f"rank {topo.rank}",
        topo.hostname,
        cfg.launch.startup_timeout_s,
        "binding cores, importing TensorFlow",
    )
    if topo.rank == cfg.launch.debug_startup_delay_rank:
        startup.phase(
            f"in its testing delay (launch.debug_startup_delay_s={cfg.launch.debug_startup_delay_s:g})"
        )
        time.sleep(cfg.launch.debug_startup_delay_s)
        startup.phase("binding cores, importing TensorFlow")
    slot = layout.core_slot(topo.rank, topo.local_rank, topo.local_size)
    binding = runtime.bind(cfg, topo, slot)
    mpi_env = runtime.mpi_environment(cfg, os.environ)
    allocator = runtime.allocator_environment(cfg, os.environ)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    local = not MODE_CAPABILITIES[cfg.mode.name].many_processes  # one process, many devices
    rank_info: dict[str, Any] = runtime.configure_tensorflow(
        cfg, topo, binding.cpus, cfg.mode.num_devices if local else None
    )
    rank_info["binding"] = binding.how
    rank_info["mpi_environment"] = mpi_env
    rank_info["allocator"] = allocator
    rank_info.update(
        rank=topo.rank,
        host=topo.hostname,
        local_rank=topo.local_rank,
        local_size=topo.local_size,
        core_slot=list(slot),
        pid=os.getpid(),
    )
    return layout, rank_info


def _prepare(
    cfg: Config, mode: modes.Mode, rank_info: dict[str, Any], probe: xla.Probe | None = None
) -> tuple[RunHooks, list[str]]:
    """Build the model, restore the checkpoint and give every rank the same start; return
    the hooks and the lines that say what was resumed."""
    startup.phase("building the model, its optimizer and its input")
    mode.build()
    hooks = RunHooks(cfg, mode, probe)
    startup.phase("restoring the checkpoint")
    resumed = hooks.restore()  # the chief's state, before initialize() shares it
    startup.phase("waiting for every rank to share the starting point", waiting=True)
    mode.initialize()
    rank_info["worker"] = mode.worker_index
    return hooks, resumed


def _watchdog(
    cfg: Config, topo: Topology, mode: modes.Mode, run: Run, progress: watchdog.Progress
) -> watchdog.Watchdog:
    """This rank's watchdog (not started yet): heartbeats and the step deadline."""
    return watchdog.Watchdog(
        mode.worker_index,
        topo.hostname,
        interval=cfg.fault.heartbeat_interval_s,
        timeout=cfg.fault.heartbeat_timeout_s,
        step_deadline=cfg.fault.step_deadline_s,
        on_abort=run.abort,
        progress=progress,
        on_lost=run.worker_lost if mode.tolerates_lost_workers() else None,
        startup_timeout=cfg.launch.startup_timeout_s,
    )


def _meet(
    cfg: Config,
    topo: Topology,
    mode: modes.Mode,
    run: Run,
    dog: watchdog.Watchdog,
    rank_info: dict[str, Any],
    resumed: list[str],
) -> None:
    """The start-up exchange: every rank's facts and watchdog port reach the chief, which
    prints the banner; then the watchdogs connect."""
    port = dog.listen() if cfg.fault.watchdog and not mode.is_chief else 0
    startup.phase("waiting for every rank at the start-up exchange", waiting=True)
    infos = mode.exchange({"rank": rank_info, "port": port})
    if mode.is_chief:
        assert infos is not None
        run.start([i["rank"] for i in infos])
        for line in banner(cfg, mode, rank_info) + resumed:
            print(line, flush=True)
    if cfg.fault.watchdog and mode.num_workers > 1:
        peers = None
        if mode.is_chief:
            assert infos is not None
            peers = [
                {
                    "rank": i["rank"]["worker"],
                    "host": i["rank"]["host"],
                    "addr": watchdog.advertised_address(i["rank"]["host"], topo.hostname),
                    "port": i["port"],
                }
                for i in infos
                if i["rank"]["worker"] != mode.worker_index
            ]
        dog.start(peers)
        run.peers = dog.peers


def _collect(
    cfg: Config,
    topo: Topology,
    mode: modes.Mode,
    run: Run,
    hooks: RunHooks,
    stop: stopping.StopRequest,
    measured: float,
) -> list[dict[str, Any]] | None:
    """Every rank's measurements, gathered on the chief (None on the other ranks)."""
    mine = metrics.RankMeasurement(
        mode.worker_index,
        topo.hostname,
        cfg.train.per_device_batch_size,
        tuple(run.times),
        measured,
    )
    return mode.gather(
        {
            **mine.to_dict(),
            "synthetic_step_times": hooks.synthetic_times,
            "stop_signal": stop.signum,
            # CPU time of all this process's threads over the measured steps: spinning
            # and oversubscribed thread pools show here even when wall time is noisy.
            "cpu_seconds": run.cpu_seconds,
            "cpu_ms_per_image": 1000 * run.cpu_seconds / max(1, len(run.times) * mine.batch_size),
            "xla": hooks.xla_probe.final().to_dict(),
            "host_memory_peak_bytes": runtime.host_memory_peak_bytes(),
        }
    )


def _stop_info(
    cfg: Config,
    mode: modes.Mode,
    run: Run,
    hooks: RunHooks,
    gathered: list[dict[str, Any]] | None,
    stop: stopping.StopRequest,
    stopped: bool,
    done: int,
    agreement: float,
) -> dict[str, Any]:
    """How the run ended, for the record, said on the chief when a signal stopped it."""
    # Any rank's signal stands for all: with a signal only some ranks received, every
    # rank (and the record) still names it, and exits with the same code.
    signals = [g.get("stop_signal") for g in gathered] if gathered else [stop.signum]
    stop_info = stop_details(stopped, done, cfg, len(run.times), signals)
    stop_info["agreement_seconds_excluded"] = agreement
    stop_info["checkpoint"] = hooks.stop_checkpoint
    if stopped:
        _say(
            mode,
            f"hvdbench: stopping on {stop_info['signal']} after {len(run.times)} of "
            f"{cfg.train.num_steps} measured steps",
        )
        if hooks.stop_checkpoint and hooks.stop_checkpoint["path"]:
            _say(
                mode,
                f"hvdbench: checkpoint at global step {hooks.global_step} written to "
                f"{hooks.stop_checkpoint['path']}",
            )
    return stop_info


def _record(
    cfg: Config,
    mode: modes.Mode,
    run: Run,
    hooks: RunHooks,
    gathered: list[dict[str, Any]],
    stop_info: dict[str, Any],
    stopped: bool,
) -> None:
    """The chief's totals, printed, and the complete record, written."""
    totals = None
    extra: dict[str, Any] = {}
    if run.times:
        totals = metrics.aggregate(
            [metrics.RankMeasurement.from_dict(g) for g in gathered], mode.lockstep()
        )
        for line in metrics.summary_lines(totals):
            print(line, flush=True)
        device = "GPU" if _gpu_names() else "CPU"
        for line in metrics.horovod_lines(totals, cfg.model.name, device):
            print(line, flush=True)
        extra = hooks.record_fields(gathered, totals)
        if "input_pipeline" in extra:
            print(input_pipeline_line(extra["input_pipeline"]), flush=True)
        counts = mode.gradient_counts()
        if counts is not None:
            extra["backup_workers"] = metrics.applied_rates(totals.total_images_per_sec, *counts)
            print(metrics.applied_line(extra["backup_workers"]), flush=True)
    extra |= {
        "xla": xla.summary([g.get("xla") for g in gathered]),  # what ran, not what was asked
        "learning_rate_in_effect": mode.learning_rate(),  # the chief's optimizer's, at the end
        "slurm": slurm.job_info(os.environ),
        "stop": stop_info,
        "global_step": hooks.global_step,  # also when no measured step ran
    }
    if mode.tolerates_lost_workers():
        extra |= run.lost_fields(gathered)
        if run.lost:
            print(run.lost_line(gathered), flush=True)
    path = run.save_complete(gathered, totals, extra, stopped)
    print(f"hvdbench: record written to {path}", flush=True)


def _measure(
    cfg: Config,
    mode: modes.Mode,
    run: Run,
    progress: watchdog.Progress,
    hooks: RunHooks,
    stop: stopping.StopRequest,
) -> tuple[float, bool, int, float]:
    """Warm up, then time each measured step. Every ``stop.check_every`` steps (warm-up
    included) the ranks agree on whether to stop. Returns the measured wall time, less the
    time spent in hooks (checkpoints, summaries), record rewrites and stop agreements;
    whether the ranks stopped early; the steps run; the seconds spent agreeing."""
    done = 0
    agreement = 0.0
    stopped = False

    def agreed_stop() -> bool:
        nonlocal agreement
        if not stopping.should_check(done, cfg.stop.check_every):
            return False
        t = time.perf_counter()
        agreed = mode.agree_stop(stop.requested)
        agreement += time.perf_counter() - t
        return agreed

    for _ in range(cfg.train.num_warmup_steps):
        hooks.before_step()
        t0 = time.perf_counter()
        hooks.after_step(mode.step(), time.perf_counter() - t0)
        done += 1
        if agreed_stop():
            stopped = True
            break
    if not stopped:
        _say(mode, "Done warm up")
        if hooks.compare_synthetic:
            synthetic = hooks.measure_synthetic()
            rate = metrics.perf_timing(cfg.train.per_device_batch_size, synthetic)[0]
            _say(mode, f"Synthetic data: {rate:.1f} images/sec per device (for comparison)")
        _say(mode, metrics.progress_header())

    batch = cfg.train.per_device_batch_size
    overhead = hooks.overhead
    saving = 0.0
    agreement = 0.0
    start = time.perf_counter()
    cpu_start = time.process_time()
    for i in range(1, 0 if stopped else cfg.train.num_steps + 1):
        hooks.before_step()
        progress.begin(i)
        t0 = time.perf_counter()
        loss = mode.step()
        run.times.append(time.perf_counter() - t0)
        progress.end()
        run.losses.append(loss)
        hooks.after_step(loss, run.times[-1])
        if metrics.should_display(i, cfg.train.display_every) and mode.is_chief:
            print(metrics.progress_line(i, batch, run.times, loss), flush=True)
            t1 = time.perf_counter()
            run.save_partial(t1 - start)
            saving += time.perf_counter() - t1
        done += 1
        if agreed_stop():
            stopped = True
            break
    measured = time.perf_counter() - start - (hooks.overhead - overhead) - saving - agreement
    run.cpu_seconds = time.process_time() - cpu_start
    hooks.finish(stopped, run.path.with_suffix(".ckpt") if run.path else None)
    return measured, stopped, done, agreement


def _fail(run: Run, dog: watchdog.Watchdog | None, error: BaseException) -> NoReturn:
    """A step raised: a peer died, or a launcher is stopping the job. Give the watchdog the
    chance to name the lost rank (it ends the process when it does); otherwise record the
    error here. The process is in no state for an orderly shutdown, so it exits at once."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a launcher's SIGTERM must not cut the save
    if dog is not None and dog.running:
        dog.wait_for_verdict()
    text = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {text[0] if text else ''}"
    code = watchdog.EXIT_FAULT
    try:
        run.abort(message)
    finally:
        print(
            f"hvdbench: error: worker {run.mode.worker_index} stopped: {message}",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(code)


class Run:
    """The chief's view of the run, and its one record file, rewritten atomically as the run
    goes: ``incomplete`` every display interval and on abort, ``complete`` at the end. A rank
    that dies cannot take the measurements with it."""

    def __init__(self, cfg: Config, mode: modes.Mode, argv: list[str]) -> None:
        self.cfg, self.mode, self.argv = cfg, mode, argv
        self.times: list[float] = []
        self.losses: list[float] = []
        self.cpu_seconds = 0.0
        self.path: Path | None = None
        self.base: dict[str, Any] = {}
        self.peers: list[watchdog.Peer] = []
        self.lost: list[dict[str, Any]] = []  # workers left out (backup workers)
        # the watchdog thread rewrites the record too when it leaves a worker out: one
        # writer at a time, and never an incomplete record over the complete one
        self._writing = threading.Lock()
        self._final = False
        self.started = time.perf_counter()

    def start(self, rank_infos: list[dict[str, Any]]) -> None:
        cfg = self.cfg
        self.base = {
            "schema_version": record.RECORD_SCHEMA_VERSION,
            "status": "incomplete",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mode": cfg.mode.name,
            "model": cfg.model.name,
            "config": cfg.to_dict(),
            "command_line": [sys.executable, "-m", "hvdbench", *self.argv],
            "git_sha": record.git_sha(),
            "topology": topology_summary(rank_infos),
            "mode_details": self.mode.details(),
            "versions": versions(),
            "hardware": record.hardware(_gpu_names()),
            "environment": record.captured_env(os.environ),
        }
        name = record.record_name(cfg.mode.name, cfg.model.name, len(rank_infos))
        self.path = Path(cfg.output.dir) / name
        self._write({"status": "incomplete", "totals": None, "per_rank": [], "chief_losses": []})

    def _chief_so_far(self, seconds: float | None = None) -> dict[str, Any]:
        times = tuple(self.times)
        seconds = sum(times) if seconds is None else seconds
        return metrics.RankMeasurement(
            self.mode.worker_index,
            self.mode.topo.hostname,
            self.cfg.train.per_device_batch_size,
            times,
            seconds,
        ).to_dict()

    def _write(self, fields: dict[str, Any], final: bool = False) -> Path:
        assert self.path is not None
        with self._writing:
            if not self._final:
                record.write_atomic(self.path, {**self.base, **fields})
            self._final = self._final or final
        return self.path

    def save_partial(self, seconds: float, error: str | None = None) -> None:
        """Rewrite the record with the steps the chief has measured so far."""
        if self.path is None:
            return
        fields: dict[str, Any] = {
            "status": "incomplete",
            "totals": None,
            "per_rank": [self._chief_so_far(seconds)],
            "steps_completed": {str(p.rank): p.step for p in self.peers}
            | {str(self.mode.worker_index): len(self.times)},
            "chief_losses": list(self.losses),
        }
        if error:
            fields["error"] = error
        if self.lost:
            fields["lost_workers"] = list(self.lost)
        self._write(fields)

    def worker_lost(self, peer: watchdog.Peer) -> str | None:
        """The chief's watchdog saw worker ``peer`` exit (backup workers): leave it out and
        say so, or return the message that ends the job when too few workers remain."""
        mode = self.mode
        n = mode.num_workers
        needed = lost_workers.replicas(self.cfg, n)
        self.lost.append(
            {
                "worker": peer.rank,
                "host": peer.host,
                "last_step_reported": peer.step,  # its measured step at its last heartbeat
                "chief_step": len(self.times),  # the chief's measured steps by then
                "seconds_into_run": round(time.perf_counter() - self.started, 3),
            }
        )
        verdict = lost_workers.too_few([e["worker"] for e in self.lost], n, needed)
        if verdict is not None:
            return f"worker {peer.rank} on host {peer.host} exited at step {peer.step}; {verdict}"
        mode.worker_lost(peer.rank)
        print(
            "hvdbench: warning: "
            + lost_workers.continuing(peer.rank, n, [e["worker"] for e in self.lost], needed)
            + f"; it exited on host {peer.host} at step {peer.step}",
            file=sys.stderr,
            flush=True,
        )
        self.save_partial(time.perf_counter() - self.started)  # names it at once
        return None

    def lost_fields(self, gathered: list[dict[str, Any]]) -> dict[str, Any]:
        """What the record says of lost workers: who, and whose steps the totals cover."""
        return {
            "lost_workers": list(self.lost),
            "workers_started": self.mode.num_workers,
            "workers_finished": len(gathered),
            "totals_cover_workers": [g["rank"] for g in gathered],
        }

    def lost_line(self, gathered: list[dict[str, Any]]) -> str:
        lost = ", ".join(
            f"worker {e['worker']} (at step {e['last_step_reported']})" for e in self.lost
        )
        return (
            f"hvdbench: the job continued with {len(gathered)} of {self.mode.num_workers} "
            f"workers after losing {lost}; the totals cover workers "
            + ", ".join(str(g["rank"]) for g in gathered)
            + " only"
        )

    def abort(self, message: str) -> None:
        """Called by the watchdog thread before the process exits."""
        if self.mode.is_chief:
            self.save_partial(time.perf_counter() - self.started, error=message)

    def save_complete(
        self,
        gathered: list[dict[str, Any]],
        totals: metrics.Totals | None,
        extra: dict[str, Any],
        stopped: bool = False,
    ) -> Path:
        """The final record: complete, or incomplete when the ranks stopped on a signal
        (then totals cover the steps done, or are None when no measured step ran)."""
        return self._write(
            {
                "status": "incomplete" if stopped else "complete",
                "mode_details": self.mode.details(),  # settings and end-of-run state
                "totals": totals.to_dict() if totals is not None else None,
                "per_rank": gathered,
                "chief_losses": list(self.losses),
                **extra,
            },
            final=True,
        )


def input_pipeline_line(p: dict[str, Any]) -> str:
    return (
        f"input pipeline: real {p['real_step_time_mean'] * 1000:.1f} ms/step vs synthetic "
        f"{p['synthetic_step_time_mean'] * 1000:.1f} ms/step "
        f"(x{p['real_over_synthetic_step_time']:.2f}): "
        + ("the input is the bottleneck" if p["input_bound"] else "the input keeps up")
    )


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
    ``signals_by_rank`` is what each rank had received when the ranks gathered after
    agreeing to stop. A signal that arrives later is not in it, though that rank still
    exits with the agreed code.
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
