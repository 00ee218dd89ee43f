"""What happens around the training steps, the same in every mode: resume from and save
checkpoints, write TensorBoard summaries, profile a few steps, and time synthetic steps
beside real ones.

The benchmark loop calls :class:`RunHooks` at a few fixed points; the hooks reach the model
only through the :class:`~hvdbench.modes.Mode` methods ``checkpoint_objects``,
``summary_histograms``, ``learning_rate``, ``swap_input`` and ``start_trace``/``stop_trace``,
so a mode adopts all of this by providing those. Only the chief saves and writes summaries.

The global step counts every training step applied to the model (warm-up and synthetic
comparison steps included) and carries over from the checkpoint a run resumes from.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from typing import Any

from hvdbench import config, models
from hvdbench.components import metrics, xla
from hvdbench.components.checkpoint import Checkpointer
from hvdbench.config import CheckpointConfig, Config
from hvdbench.data import describe, make_synthetic_input
from hvdbench.modes import Mode


def trace_dir(cfg: Config) -> str:
    """Where the profile and Horovod's timeline go."""
    return cfg.trace.dir or cfg.summary.dir or os.path.join(cfg.output.dir, "trace")


class RunHooks:
    def __init__(self, cfg: Config, mode: Mode, xla_probe: xla.Probe | None = None) -> None:
        self.cfg = cfg
        self.mode = mode
        # XLA's verdict on the step, taken after the first one (see _check_xla)
        self.xla_probe = xla_probe or xla.Probe(False, None, set())
        self.global_step = 0
        self.start_step = 0
        self.local_step = 0
        self.restored_from: str | None = None
        self.checkpointer: Any = None
        self.writer: Any = None
        self.trace = config.trace_steps(cfg.trace.steps)
        self.tracing = False
        self.traced = False
        self._recent: list[float] = []
        self.synthetic_times: list[float] = []
        self.overhead = 0.0  # seconds spent in the hooks, kept out of the measured time
        self._scratch: str | None = None
        self._last_summary_step = 0
        self.stop_checkpoint: dict[str, Any] | None = None  # what finish(stopped) saved
        if cfg.checkpoint.dir and (mode.is_chief or mode.checkpoint_on_every_worker):
            self.checkpointer = self._checkpointer(cfg.checkpoint, mode.checkpoint_objects())
        if mode.is_chief and cfg.summary.dir:
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(cfg.summary.dir)

    def _checkpointer(self, ckpt: CheckpointConfig, objects: dict[str, Any]) -> Any:
        """The chief saves into ``ckpt.dir``; another worker of a collective save (a mode
        with ``checkpoint_on_every_worker``) writes its share to a scratch directory that
        :meth:`finish` removes."""

        if not self.mode.is_chief:
            import atexit
            import shutil
            import tempfile

            self._scratch = tempfile.mkdtemp(prefix="hvdbench-ckpt-")
            # also when the run ends in an error before finish() (a peer's failure, say)
            atexit.register(shutil.rmtree, self._scratch, ignore_errors=True)
        return Checkpointer(ckpt, objects, write_dir=self._scratch)

    # -- start

    def restore(self) -> list[str]:
        """Resume from the checkpoint directory (chief); before the mode's initialize(),
        which then hands the restored state to every rank. Returns lines to print."""
        if self.checkpointer is None:
            return []
        self.global_step, self.restored_from = self.checkpointer.restore()
        self.start_step = self.global_step
        self._last_summary_step = self.global_step
        self.mode.adopt_checkpoint(self.global_step if self.restored_from else None, self._reload)
        if self.restored_from:
            lr = self.cfg.train.learning_rate
            saved = set(self.mode.use_config_learning_rate())  # not the checkpoint's
            note = ""
            if not _same_float32(saved, lr):
                old = ", ".join(f"{v:g}" for v in sorted(saved))
                note = f"; learning rate {lr:g} (train.learning_rate), not the checkpoint's {old}"
            return [
                f"Checkpoint:  resumed from {self.restored_from} at step {self.global_step}{note}"
            ]
        return [f"Checkpoint:  none in {self.cfg.checkpoint.dir}; starting at step 0"]

    def _reload(self) -> int | None:
        """Restore the newest checkpoint again (a graph mode whose ps lost its variables)."""
        step, prefix = self.checkpointer.restore()
        if prefix is None:
            return None
        print(f"Checkpoint:  restored {prefix} at step {step} again", flush=True)
        return step

    # -- every step

    def before_step(self) -> None:
        t0 = time.perf_counter()
        self._before_step()
        self.overhead += time.perf_counter() - t0

    def after_step(self, loss: float, seconds: float) -> None:
        t0 = time.perf_counter()
        self._after_step(loss, seconds)
        self.overhead += time.perf_counter() - t0

    def _before_step(self) -> None:
        if self.trace and not self.traced and self.local_step + 1 == self.trace[0]:
            path = trace_dir(self.cfg)
            os.makedirs(path, exist_ok=True)
            self.mode.start_trace(path)
            self.tracing = True

    def _after_step(self, loss: float, seconds: float) -> None:
        self.local_step += 1
        if self.local_step == 1:
            self._check_xla(seconds)
        counted = self.mode.current_global_step()
        self.global_step = self.global_step + 1 if counted is None else counted
        self._recent.append(seconds)
        if self.tracing and self.local_step == self.trace[1]:  # type: ignore[index]
            self._stop_trace()
        every = self.cfg.summary.every_steps
        if self.writer is not None and self.global_step // every > self._last_summary_step // every:
            self._last_summary_step = self.global_step
            self._summaries(loss)
        if self.checkpointer is not None:
            due = self.checkpointer.due(self.global_step)
            if self.mode.checkpoint_on_every_worker and self.cfg.checkpoint.every_seconds:
                due = self.mode.any_rank(due)  # the clocks differ: every worker saves or none
            if due:
                self._save()

    def _save(self) -> None:
        if self.global_step == self.checkpointer.last_saved_step:
            return
        counted = self.mode.before_checkpoint()
        if counted is not None:  # the step the values were read at
            self.global_step = counted
        self.checkpointer.save(self.global_step)

    def _check_xla(self, seconds: float) -> None:
        """After the first step: did XLA compile it? With train.jit_compile the ranks agree
        (a collective at the same step on every rank) and all stop when any rank's step ran
        without XLA: a record of the other computation under this config would be wrong."""
        probe = self.xla_probe
        verdict = probe.check(seconds)
        if not probe.requested:
            return
        failed = self.mode.any_rank(not verdict.compiled)
        if self.mode.is_chief:
            print(xla.verdict_line(verdict), flush=True)
        if failed:
            probe.close()  # the process ends without an orderly exit
            where = verdict.evidence if not verdict.compiled else "on another rank"
            raise xla.NotCompiledError(
                f"train.jit_compile: the step of mode {self.cfg.mode.name} ran without XLA "
                f"({where}); set train.jit_compile=false to measure it without XLA"
            )

    def _stop_trace(self) -> None:
        self.mode.stop_trace()
        self.tracing, self.traced = False, True

    def _summaries(self, loss: float) -> None:
        import tensorflow as tf

        n = self.mode.num_workers
        images = self.cfg.train.per_device_batch_size * n * len(self._recent)
        rate = images / sum(self._recent) if self._recent else 0.0
        self._recent = []
        step = self.global_step
        with self.writer.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("learning_rate", self.mode.learning_rate())
            tf.summary.scalar("images_per_sec", rate)
            if self.cfg.summary.verbosity >= 2:
                for name, value in self.mode.summary_histograms(with_gradients=True).items():
                    if value is not None:
                        tf.summary.histogram(name.split(":")[0], value)

    # -- input pipeline check

    @property
    def compare_synthetic(self) -> bool:
        return self.cfg.data.compare_synthetic and self.cfg.data.source != "synthetic"

    def measure_synthetic(self) -> list[float]:
        """Time ``num_steps`` steps on one synthetic batch reused, as the ceiling that the
        real input's step time is compared with, after ``num_warmup_steps`` (at least one)
        untimed ones: swapping the input retraces a ``tf.function`` step and gives a graph
        mode a new path to prime, which the first steps would otherwise pay (a 5-step
        comparison read 2.5x faster real than synthetic)."""

        cfg, mode = self.cfg, self.mode
        synthetic = make_synthetic_input(
            cfg, models.input_shape(cfg), models.num_classes(cfg), mode.worker_index
        )
        real = mode.swap_input(synthetic)
        times = []
        try:
            for _ in range(max(1, cfg.train.num_warmup_steps)):
                self.before_step()
                t0 = time.perf_counter()
                loss = mode.step()
                self.after_step(loss, time.perf_counter() - t0)
            for _ in range(cfg.train.num_steps):
                self.before_step()
                t0 = time.perf_counter()
                loss = mode.step()
                times.append(time.perf_counter() - t0)
                self.after_step(loss, times[-1])
        finally:
            mode.swap_input(real)
        self.synthetic_times = times
        return times

    # -- end

    def finish(self, stopped: bool = False, stop_dir: str | os.PathLike[str] | None = None) -> None:
        """Stop an unfinished trace, save the final checkpoint, flush the summaries.

        ``stopped``: the ranks stopped early on a signal; the chief then saves a checkpoint
        even when no periodic ones were asked for (``stop.checkpoint``), into
        ``checkpoint.dir`` or else ``stop_dir``, so that the time spent is not lost."""
        if self.tracing:
            self._stop_trace()
        if stopped:
            self._save_on_stop(stop_dir)
        elif self.checkpointer is not None:
            self._save()
        if self._scratch is not None:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)
        if self.writer is not None:
            self.writer.flush()

    def _save_on_stop(self, stop_dir: str | os.PathLike[str] | None) -> None:
        """The checkpoint of a stopped run; its outcome goes to ``stop_checkpoint`` for the
        record. A failure is reported there, never raised: the record matters more."""
        every = self.mode.checkpoint_on_every_worker  # a collective save: all take part
        if not (self.mode.is_chief or every):
            return
        if self.checkpointer is None:
            if not self.cfg.stop.checkpoint or (self.mode.is_chief and stop_dir is None):
                return
            try:
                objects = self.mode.checkpoint_objects()
            except (AttributeError, NotImplementedError):
                self.stop_checkpoint = {
                    "path": None,
                    "error": f"mode {self.cfg.mode.name} does not save checkpoints",
                }
                return
        try:
            if self.checkpointer is None:
                directory = os.fspath(stop_dir) if stop_dir is not None else ""  # chief's
                self.checkpointer = self._checkpointer(
                    dataclasses.replace(self.cfg.checkpoint, dir=directory), objects
                )
            self._save()
            saved = self.checkpointer.latest
        except Exception as e:  # noqa: BLE001 - disk full, permissions: keep the record
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            warn = f"checkpoint on stop failed: {type(e).__name__}: {first[:200]}"
            print(f"hvdbench: warning: {warn}", file=sys.stderr, flush=True)
            self.stop_checkpoint = {"path": None, "error": warn}
            return
        self.stop_checkpoint = {
            "dir": self.checkpointer.cfg.dir,
            "path": saved,
            "global_step": self.global_step,
        }

    def record_fields(self, gathered: list[dict[str, Any]], totals: metrics.Totals) -> dict:
        """The record's ``data``, ``checkpoint``, ``summary``, ``trace`` and
        ``input_pipeline`` entries (chief)."""

        cfg = self.cfg
        out: dict[str, Any] = {"data": describe(cfg), "global_step": self.global_step}
        if self.checkpointer is not None:
            out["checkpoint"] = {
                "dir": cfg.checkpoint.dir,
                "start_step": self.start_step,
                "restored_from": self.restored_from,
                "saved": self.checkpointer.saved,
            }
        if self.writer is not None:
            out["summary"] = {"dir": cfg.summary.dir, "verbosity": cfg.summary.verbosity}
        if self.trace:
            out["trace"] = {
                "dir": trace_dir(cfg),
                "steps": list(self.trace),
                "captured": self.traced,
            }
        if self.compare_synthetic:
            out["input_pipeline"] = input_pipeline(gathered, totals)
        return out


def _same_float32(values: set[float], lr: float) -> bool:
    """Whether every value is ``lr`` as a float32 variable holds it."""
    import struct

    def f32(x: float) -> float:
        return float(struct.unpack("f", struct.pack("f", x))[0])

    return all(f32(v) == f32(lr) for v in values)


BOTTLENECK_RATIO = 1.1


def input_pipeline(gathered: list[dict[str, Any]], real: metrics.Totals) -> dict[str, Any]:
    """Real against synthetic step time over every rank's steps: the input pipeline is the
    bottleneck when real steps take more than 10% longer than synthetic ones."""
    if real.step_times_from == metrics.JOB:  # as the real steps: the job's step times
        synth = metrics.job_step_times([g.get("synthetic_step_times", []) for g in gathered])
    else:
        synth = [t for g in gathered for t in g.get("synthetic_step_times", [])]
    mean_synth = statistics.fmean(synth)
    batch = real.per_device_batch_size
    ratio = real.step_time_mean / mean_synth
    return {
        "real_step_time_mean": real.step_time_mean,
        "synthetic_step_time_mean": mean_synth,
        "real_per_device_images_per_sec": real.per_device_images_per_sec,
        "synthetic_per_device_images_per_sec": batch / mean_synth,
        "real_over_synthetic_step_time": ratio,
        "input_bound": ratio > BOTTLENECK_RATIO,
    }
