"""Replicated training with Horovod: every rank holds the model, gradients are averaged by
ring all-reduce (NCCL on GPUs, MPI or Gloo on CPUs), and rank 0 broadcasts the start."""

from __future__ import annotations

import os
import sys
from typing import Any

from hvdbench import models
from hvdbench.components import startup
from hvdbench.config import MODE_CAPABILITIES, Config, HorovodConfig
from hvdbench.data import make_input
from hvdbench.errors import UsageError
from hvdbench.launch import netinfo
from hvdbench.launch.buildcheck import rebuild_message
from hvdbench.modes.registry import Mode, register

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
        "HOROVOD_FUSION_THRESHOLD": str(int(h.fusion_threshold_mib * MIB)),
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
        "fusion_threshold_bytes": int(h.fusion_threshold_mib * MIB),
        "cycle_time_ms": cycle,
        "hierarchical_allreduce": hierarchical,
        "timeline": h.timeline or None,
        "autotune": h.autotune,
        "autotune_log": (h.autotune_log or None) if h.autotune else None,
        "num_groups": h.num_groups,
    }
    return env, effective, warnings


def gloo_timeout(cfg: Config) -> str:
    """HOROVOD_GLOO_TIMEOUT_SECONDS for launch.startup_timeout_s: Horovod reads whole
    seconds, and Gloo's store waits this long for every rank at start-up."""
    return str(max(1, int(round(cfg.launch.startup_timeout_s))))


def required_controller(source: str, env: dict[str, str] | os._Environ[str]) -> str | None:
    """The controller this launch needs: Gloo under horovodrun --gloo (or hvdbench's own
    rendezvous), MPI under mpirun/srun, none for a single process."""
    if env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"):
        return "gloo"
    if source in ("horovod", "openmpi", "pals", "hydra", "pmix", "slurm"):
        return "mpi"
    return None


def check_build(hvd: Any, controller: str | None) -> None:
    """Fail with rebuild advice when Horovod lacks the controller this launch needs."""

    built = {"mpi": hvd.mpi_built(), "gloo": hvd.gloo_built()}
    if controller and not built[controller]:
        raise UsageError(
            f"launch.horovodrun_controller: {rebuild_message(['MPI' if controller == 'mpi' else 'Gloo'])}"
        )


@register("horovod")
class HorovodMode(Mode):
    """``hvd.DistributedGradientTape`` inside a ``tf.function`` step."""

    capabilities = MODE_CAPABILITIES["horovod"]

    def setup(self) -> None:
        try:
            import horovod.tensorflow as hvd
        except ImportError as e:
            raise UsageError(
                f"mode.name: horovod needs Horovod with TensorFlow support ({e}); run `make install`"
            ) from None
        self.rendezvous = None
        if netinfo.own_gloo_rendezvous(self.cfg.launch.srun_controller, self.topo):
            # No horovodrun under srun: serve (rank 0) or find Horovod's Gloo rendezvous.

            startup.phase("waiting for Gloo's rendezvous on rank 0's node", waiting=True)
            self.rendezvous = netinfo.join_gloo_rendezvous(
                os.environ, self.cfg.launch.rendezvous_port, self.cfg.launch.startup_timeout_s
            )
        # Horovod's Gloo store waits this long for every rank's key (its default is 30 s).
        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", gloo_timeout(self.cfg))
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
        startup.phase(
            "waiting in hvd.init() for every rank to join (MPI_Init or Gloo's rendezvous)",
            waiting=True,
        )
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

        from hvdbench.components import training

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

        from hvdbench.components import training

        hvd, cfg, model, opt = self.hvd, self.cfg, self.model, self.optimizer
        compression = hvd.Compression.fp16 if cfg.horovod.fp16_allreduce else hvd.Compression.none
        wd, clip_norm = cfg.train.weight_decay, cfg.train.gradient_clip_norm
        num_groups = cfg.horovod.num_groups

        def distributed(tape: Any) -> Any:
            return hvd.DistributedGradientTape(
                tape, compression=compression, op=hvd.Average, num_groups=num_groups
            )

        if not cfg.train.jit_compile:

            @tf.function
            def step(images: Any, labels: Any) -> Any:
                loss, grads = training.loss_and_gradients(
                    model, opt, images, labels, wd, variables, tape=distributed
                )
                training.apply_gradients(opt, grads, variables, clip_norm)
                return loss

            return step

        # Horovod's ops are not XLA ops: compile the local forward and backward pass, and
        # average outside the compiled function.
        def pass_of(images: Any, labels: Any) -> Any:
            return training.loss_and_gradients(model, opt, images, labels, wd, variables)

        local_gradients = training.xla_pass(pass_of)

        @tf.function
        def jit_step(images: Any, labels: Any) -> Any:
            loss, grads = local_gradients(images, labels)
            grads = hvd.grouped_allreduce(grads, op=hvd.Average, compression=compression)
            training.apply_gradients(opt, grads, variables, clip_norm)
            return loss

        return jit_step

    def initialize(self) -> None:
        from hvdbench.components import training

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

    def exchange(self, obj: Any) -> list[Any] | None:
        """Every rank's start-up object on the chief, in rank order; None elsewhere.

        Bound: O(ranks) on the chief and O(1) per worker (in data; the splits vector is one
        integer per rank). An alltoall in which every rank sends its pickled object to rank
        0 only and rank 0 sends nothing, where an allgather would hand every rank all the
        objects (a few kB each, megabytes per rank at 1,000 ranks)."""
        import pickle

        import numpy as np
        import tensorflow as tf

        size = self.hvd.size()
        if size == 1:
            return [obj]
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        splits = np.zeros(size, np.int32)
        splits[0] = data.size
        received, rsplits = self.hvd.alltoall(
            tf.constant(data), splits=tf.constant(splits), name="hvdbench_exchange"
        )
        if self.hvd.rank() != 0:
            return None
        raw, offsets = received.numpy().tobytes(), np.cumsum([0, *rsplits.numpy()])
        return [pickle.loads(raw[offsets[i] : offsets[i + 1]]) for i in range(size)]

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
