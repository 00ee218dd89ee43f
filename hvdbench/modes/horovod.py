"""Replicated training with Horovod: every rank holds the model, gradients are averaged by
ring all-reduce (NCCL on GPUs, MPI or Gloo on CPUs), and rank 0 broadcasts the start."""

from __future__ import annotations

import os
import sys
from typing import Any

from hvdbench.config import HorovodConfig
from hvdbench.errors import UsageError
from hvdbench.modes import Mode, register
from hvdbench.modes.capabilities import Capabilities

MIB = 1024 * 1024
# A world of one rank exchanges nothing (hvdbench skips its collectives, and Horovod's
# gradient tape passes the gradients through), yet Horovod's background thread would still
# wake every cycle_time_ms to look for work: 2% of a core at the default 1 ms. It wakes
# this rarely instead.
SOLO_CYCLE_TIME_MS = 100.0


def knob_env(
    h: HorovodConfig, nccl_built: bool, world_size: int
) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """Horovod's environment for the config's knobs, the values in effect, and warnings.

    Horovod 0.28.1 ignores HOROVOD_HIERARCHICAL_ALLREDUCE unless it was built with NCCL,
    so the record says off in that case instead of repeating what was asked. With
    ``world_size`` 1 the cycle is :data:`SOLO_CYCLE_TIME_MS`.
    """
    warnings: list[str] = []
    hierarchical = h.hierarchical_allreduce
    if hierarchical and not nccl_built:
        warnings.append(
            "horovod.hierarchical_allreduce=true has no effect: this Horovod was built without "
            "NCCL; recorded as off"
        )
        hierarchical = False
    cycle = SOLO_CYCLE_TIME_MS if world_size == 1 else h.cycle_time_ms
    env = {
        "HOROVOD_FUSION_THRESHOLD": str(int(h.fusion_threshold_mb * MIB)),
        "HOROVOD_CYCLE_TIME": repr(cycle),
        "HOROVOD_HIERARCHICAL_ALLREDUCE": "1" if hierarchical else "0",
        "HOROVOD_AUTOTUNE": "1" if h.autotune else "0",
    }
    if h.timeline:
        env["HOROVOD_TIMELINE"] = h.timeline
    if h.autotune and h.autotune_log:
        env["HOROVOD_AUTOTUNE_LOG"] = h.autotune_log
    effective = {
        "fp16_allreduce": h.fp16_allreduce,
        "fusion_threshold_bytes": int(h.fusion_threshold_mb * MIB),
        "cycle_time_ms": cycle,
        "hierarchical_allreduce": hierarchical,
        "timeline": h.timeline or None,
        "autotune": h.autotune,
        "autotune_log": (h.autotune_log or None) if h.autotune else None,
        "num_groups": h.num_groups,
    }
    return env, effective, warnings


def required_controller(source: str, env: dict[str, str] | os._Environ[str]) -> str | None:
    """The controller this launch needs: Gloo under horovodrun --gloo (or hvdbench's own
    rendezvous), MPI under mpirun/srun, none for a single process."""
    if env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"):
        return "gloo"
    if source in ("horovod", "openmpi", "pmix", "slurm"):
        return "mpi"
    return None


def check_build(hvd: Any, controller: str | None) -> None:
    """Fail with rebuild advice when Horovod lacks the controller this launch needs."""
    from hvdbench.buildcheck import rebuild_message

    built = {"mpi": hvd.mpi_built(), "gloo": hvd.gloo_built()}
    if controller and not built[controller]:
        raise UsageError(
            f"launch.controller: {rebuild_message(['MPI' if controller == 'mpi' else 'Gloo'])}"
        )


@register("horovod")
class HorovodMode(Mode):
    """``hvd.DistributedGradientTape`` inside a ``tf.function`` step."""

    capabilities = Capabilities(
        devices="one per process",
        input_sharding="per worker",
        cluster_roles=False,
        many_processes=True,
    )

    def setup(self) -> None:
        try:
            import horovod.tensorflow as hvd
        except ImportError as e:
            raise UsageError(
                f"mode.name: horovod needs Horovod with TensorFlow support ({e}); run `make install`"
            ) from None
        self.rendezvous = None
        if self.cfg.launch.srun_controller == "gloo" and self.topo.source in ("pmix", "slurm"):
            # No horovodrun under srun: serve (rank 0) or find Horovod's Gloo rendezvous.
            from hvdbench import netinfo

            self.rendezvous, gloo = netinfo.start_gloo_rendezvous(
                os.environ, self.cfg.launch.rendezvous_port, self.cfg.fault.heartbeat_timeout_s
            )
            os.environ.update(gloo)
        check_build(hvd, required_controller(self.topo.source, os.environ))
        env, self.knobs, warnings = knob_env(
            self.cfg.horovod, bool(hvd.nccl_built()), self.topo.size
        )
        os.environ.update(env)  # read by hvd.init()
        if self.cfg.trace.steps and not self.cfg.horovod.timeline:
            # hvd.start_timeline() for trace.steps needs the timeline enabled at init.
            os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"
        for w in warnings:
            if self.topo.rank == 0:
                print(f"hvdbench: warning: {w}", file=sys.stderr, flush=True)
        hvd.init()
        self.hvd = hvd

    @property
    def worker_index(self) -> int:
        return int(self.hvd.rank())

    @property
    def num_workers(self) -> int:
        return int(self.hvd.size())

    def build(self) -> None:
        import tensorflow as tf

        from hvdbench import models, training
        from hvdbench.data import make_input

        cfg = self.cfg
        training.set_precision_policy(cfg)
        tf.keras.utils.set_random_seed(cfg.train.seed)  # same initial weights, before broadcast
        self.model = models.build(cfg)
        self.optimizer = training.make_optimizer(cfg.train)
        variables = self.model.trainable_variables
        training.build_optimizer_state(self.optimizer, variables)
        shard, num_shards = self.input_shards(cfg, self.num_workers)[self.worker_index]
        self.next_batch = make_input(
            cfg, models.input_shape(cfg), models.num_classes(cfg), shard, num_shards
        )
        self._step = self._make_step(variables)

    def _make_step(self, variables: list[Any]) -> Any:
        import tensorflow as tf

        from hvdbench import training

        hvd, cfg, model, opt = self.hvd, self.cfg, self.model, self.optimizer
        compression = hvd.Compression.fp16 if cfg.horovod.fp16_allreduce else hvd.Compression.none
        wd, clip_norm = cfg.train.weight_decay, cfg.train.gradient_clip_norm
        num_groups = cfg.horovod.num_groups

        def apply(grads: list[Any]) -> None:
            grads = training.clip(training.unscale(opt, grads), clip_norm)
            opt.apply_gradients(zip(grads, variables))

        if not cfg.train.jit_compile:

            @tf.function
            def step(images: Any, labels: Any) -> Any:
                with tf.GradientTape() as tape:
                    loss = training.loss_fn(model, images, labels, wd)
                    scaled = training.scale_loss(opt, loss)
                tape = hvd.DistributedGradientTape(
                    tape, compression=compression, op=hvd.Average, num_groups=num_groups
                )
                apply(tape.gradient(scaled, variables))
                return loss

            return step

        # Horovod's ops are not XLA ops: compile the local forward and backward pass, and
        # average outside the compiled function.
        @tf.function(jit_compile=True)
        def local_gradients(images: Any, labels: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = training.loss_fn(model, images, labels, wd)
                scaled = training.scale_loss(opt, loss)
            return loss, tape.gradient(scaled, variables)

        @tf.function
        def jit_step(images: Any, labels: Any) -> Any:
            loss, grads = local_gradients(images, labels)
            apply(hvd.grouped_allreduce(grads, op=hvd.Average, compression=compression))
            return loss

        return jit_step

    def initialize(self) -> None:
        from hvdbench import training

        if self.topo.size == 1:  # nothing to broadcast to
            return
        self.hvd.broadcast_variables(self.model.variables, root_rank=0)
        self.hvd.broadcast_variables(training.optimizer_variables(self.optimizer), root_rank=0)

    def step(self) -> float:
        images, labels = self.next_batch()
        return float(self._step(images, labels))

    def gather(self, obj: Any) -> list[Any] | None:
        if self.hvd.size() == 1:  # no collective, so no wait for Horovod's next cycle
            return [obj]
        return list(self.hvd.allgather_object(obj))

    def any_rank(self, flag: bool) -> bool:
        import tensorflow as tf

        if self.hvd.size() == 1:
            return flag
        value = self.hvd.allreduce(tf.constant(1 if flag else 0, tf.int32), op=self.hvd.Max)
        return bool(int(value) > 0)

    def start_trace(self, logdir: str) -> None:
        """TensorFlow's profile on the chief, and Horovod's timeline for the same steps
        (unless horovod.timeline already records the whole run)."""
        super().start_trace(logdir)
        self._timeline = not self.cfg.horovod.timeline
        if self._timeline:
            self.hvd.start_timeline(os.path.join(logdir, "horovod_timeline.json"))

    def stop_trace(self) -> None:
        super().stop_trace()
        if getattr(self, "_timeline", False):
            self.hvd.stop_timeline()

    def details(self) -> dict[str, Any]:
        hvd = self.hvd
        return {
            "controller": "gloo" if hvd.gloo_enabled() else "mpi" if hvd.mpi_enabled() else None,
            "built": {
                "mpi": bool(hvd.mpi_built()),
                "gloo": bool(hvd.gloo_built()),
                "nccl": bool(hvd.nccl_built()),
                "nccl_version": int(hvd.nccl_built()) or None,
            },
            "knobs": self.knobs,
            "horovod_version": _version(),
            "gloo": self.rendezvous.describe() if self.rendezvous is not None else None,
        }

    def shutdown(self) -> None:
        self.hvd.shutdown()


def _version() -> str:
    import horovod

    return str(horovod.__version__)
