"""Mode registry: ``mode.name`` selects how the work is distributed.

The mode modules register here; importing :mod:`hvdbench.modes` imports all of them.

Each mode implements the small :class:`Mode` interface. The benchmark loop and the metrics
only talk to that interface and never branch on the mode, so a new mode is one module and
one ``@register`` line. Mode classes import TensorFlow lazily, inside their methods, so the
registry can be consulted while validating a config.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from hvdbench.config import MODE_CAPABILITIES, MODE_NAMES, Capabilities, Config
from hvdbench.errors import UsageError
from hvdbench.launch.job import JobLayout
from hvdbench.launch.topology import Topology

_MODES: dict[str, type[Mode]] = {}


class Mode(abc.ABC):
    """One way of distributing training. Lifecycle: setup, build, initialize, step..., shutdown."""

    name: ClassVar[str]
    # What it supports (config.MODE_CAPABILITIES[name]): validation reads the declaration.
    capabilities: ClassVar[Capabilities]
    next_batch: Callable[[], Any]  # eager modes: the input, swapped by swap_input()

    def __init__(self, cfg: Config, topo: Topology, layout: JobLayout | None = None) -> None:
        self.cfg = cfg
        self.topo = topo
        self.layout = layout or JobLayout.of_rank(cfg, topo)  # ps tasks, workers, roles

    @staticmethod
    def input_shards(cfg: Config, num_workers: int) -> list[tuple[int, int]]:
        """The ``(shard_index, num_shards)`` of the training split that each input
        pipeline of the job reads, in order: one per worker by default (worker ``i``
        reads shard ``i`` of ``num_workers``). Disjoint, and together the whole split."""
        return [(i, num_workers) for i in range(num_workers)]

    @classmethod
    def launch_local(cls, cfg: Config, rank_argv: list[str], dry_run: bool = False) -> int | None:
        """Start the job on this machine without a launcher (or, with ``dry_run``, print
        the commands it would start) and return its exit code; None leaves it to
        ``launch.launcher`` (horovodrun or mpirun)."""
        return None

    @abc.abstractmethod
    def setup(self) -> None:
        """Join the job: initialise the communication library or start servers."""

    @abc.abstractmethod
    def build(self) -> None:
        """Build the model, the optimizer and its state, the input and the training step."""

    @abc.abstractmethod
    def initialize(self) -> None:
        """Give every compute rank the same starting point (broadcast, or chief init)."""

    @abc.abstractmethod
    def step(self) -> float:
        """Run one training step to completion and return this rank's loss."""

    @abc.abstractmethod
    def gather(self, obj: Any) -> list[Any] | None:
        """Collect one object from every compute rank, in rank order, on the chief at least."""

    def exchange(self, obj: Any) -> list[Any] | None:
        """Collect one object from every compute rank on the chief at least, at start-up,
        without the end-of-run side effects :meth:`gather` may have.

        Bound, kept for jobs of thousands of ranks: O(ranks) on the chief and O(1) per
        worker. Horovod sends to the chief only (an alltoall); the ps modes put into ps 0's
        queue, which the chief alone takes from (and their address exchange before it,
        :func:`hvdbench.modes.grpc.cluster.scatter_addresses`, gives a worker O(num_ps)).
        This default, an all-gather, is O(ranks) per worker: a mode overrides it where its
        collectives allow. ``collective_all_reduce`` does under MPI (an mpi4py gather);
        otherwise it keeps this default, since ``MultiWorkerMirroredStrategy`` has no
        gather to one task, and its start-up is O(ranks) per worker anyway: its
        ``TF_CONFIG`` lists every worker."""
        return self.gather(obj)

    @abc.abstractmethod
    def any_rank(self, flag: bool) -> bool:
        """True on every compute rank if ``flag`` is true on any. A collective: every
        compute rank calls it at the same step, which is how ranks agree on a stop step."""

    def agree_stop(self, flag: bool) -> bool:
        """Whether this rank stops now, given its own stop flag; called every
        ``stop.check_every`` steps. By default the collective :meth:`any_rank`, so that
        every rank stops after the same step and none is left alone in a collective. A
        mode whose ranks do not step in lockstep overrides it with a check that cannot
        block (see the ps modes)."""
        return self.any_rank(flag)

    def lockstep(self) -> bool:
        """Whether the compute ranks wait for each other at every step (synchronous), so
        that the job's step time is its slowest rank's (:func:`hvdbench.components.metrics.aggregate`).
        By default they do; asynchronous modes, and backup workers, override it."""
        return True

    def gradient_counts(self) -> tuple[int, int, int] | None:
        """With backup workers (chief, after :meth:`gather`): the global steps this run
        advanced, the gradients each applies, and the gradients every worker computed;
        None when every gradient computed is applied."""
        return None

    def tolerates_lost_workers(self) -> bool:
        """Whether this job goes on when a non-chief worker dies (synchronous ps modes
        with backup workers, :mod:`hvdbench.modes.grpc.lost_workers`). By default it never does."""
        return False

    def worker_lost(self, index: int) -> None:
        """The chief's watchdog left worker ``index`` out: from now on the end-of-run
        collection and barriers count only the workers left. Called from the watchdog
        thread, only when :meth:`tolerates_lost_workers`."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def worker_index(self) -> int:
        """This compute rank's index among the workers (0 is the chief)."""

    @property
    @abc.abstractmethod
    def num_workers(self) -> int:
        """Number of compute ranks."""

    @property
    def is_chief(self) -> bool:
        """The chief (worker 0) writes every result."""
        return self.worker_index == 0

    def details(self) -> dict[str, Any]:
        """Mode-specific facts for the result record (settings in effect, versions)."""
        return {}

    def shutdown(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Leave the job cleanly."""

    # -- Hooks for checkpoints, summaries, tracing and input swaps (issue 5). The defaults
    # suit eager TF2 modes that keep ``self.model``, ``self.optimizer`` and
    # ``self.next_batch``; a graph-mode mode overrides the ones it needs.

    # Checkpoint objects restored and saved on every worker, not the chief alone: under
    # MultiWorkerMirroredStrategy each worker holds its own copy of the variables, and a
    # save may run collectives (TensorFlow's documented pattern: the chief writes the real
    # checkpoint, the other workers to a scratch directory).
    checkpoint_on_every_worker: ClassVar[bool] = False

    def adopt_checkpoint(  # noqa: B027 - optional hook, nothing to do in eager modes
        self, global_step: int | None, reload: Callable[[], int | None]
    ) -> None:
        """Called on the chief after the restore, before :meth:`initialize`: the restored
        ``global_step`` (None without a checkpoint) is in ``checkpoint_objects()``, and
        ``reload()`` restores the newest checkpoint into them again and returns its step.
        Eager modes restore in place; graph modes load the values into their graph."""

    def before_checkpoint(self) -> int | None:
        """Bring ``checkpoint_objects()`` up to date before a save (graph modes), and
        return the global step they were read at where the mode counts it (else None)."""
        return None

    def current_global_step(self) -> int | None:
        """The global step as the model's own counter has it after the last step, where the
        mode keeps one (graph modes: async workers and restored sessions move it); None
        lets the hooks count steps."""
        return None

    def checkpoint_objects(self) -> dict[str, Any]:
        """Trackables saved in the tf.train.Checkpoint beside ``global_step``. ``model`` is
        the key `hvdbench eval` restores, whatever mode trained the model."""
        return {"model": self.model, "optimizer": self.optimizer}  # type: ignore[attr-defined]

    def keras_optimizers(self) -> list[Any]:
        """This process's Keras optimizers. Each keeps its learning rate in a variable that
        checkpoints save and restore; :meth:`use_config_learning_rate` sets the config's
        again after a restore. Graph modes have none (a ``tf.compat.v1`` optimizer's
        learning rate is a constant of its graph, from the config)."""
        opt = getattr(self, "optimizer", None)
        return [] if opt is None else [opt]

    def use_config_learning_rate(self) -> list[float]:
        """After a restore (on every rank that restored, before :meth:`initialize` shares
        the state): ``train.learning_rate`` takes effect, not the one the checkpoint saved.
        Returns the learning rates the checkpoint had."""
        from hvdbench.components import training

        lr = self.cfg.train.learning_rate
        return [training.set_learning_rate(opt, lr) for opt in self.keras_optimizers()]

    def learning_rate(self) -> float:
        """The learning rate in effect, for the summaries."""
        opt = getattr(self, "optimizer", None)
        try:
            return float(opt.learning_rate)  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError):
            return self.cfg.train.learning_rate

    def summary_histograms(self, with_gradients: bool) -> dict[str, Any]:
        """Tensors for TensorBoard histograms: the weights and, if asked, this rank's local
        gradients of the loss on its next batch (before averaging)."""
        import tensorflow as tf

        from hvdbench.components import training

        model = self.checkpoint_objects()["model"]
        variables = model.trainable_variables
        out: dict[str, Any] = {f"weights/{v.name}": v for v in variables}
        if with_gradients:
            images, labels = self.next_batch()
            with tf.GradientTape() as tape:
                loss = training.loss_fn(model, images, labels, self.cfg.train.weight_decay)
            grads = tape.gradient(loss, variables)
            out.update({f"gradients/{v.name}": g for v, g in zip(variables, grads)})
        return out

    def swap_input(self, next_batch: Callable[[], Any]) -> Callable[[], Any]:
        """Train on batches from ``next_batch`` from now on; return the previous source."""
        previous = self.next_batch
        self.next_batch = next_batch
        return previous

    def start_trace(self, logdir: str) -> None:
        """Start profiling (the chief, with TensorFlow's profiler, for TensorBoard)."""
        if self.is_chief:
            import tensorflow as tf

            tf.profiler.experimental.start(logdir)

    def stop_trace(self) -> None:
        """Stop profiling and write the profile under ``logdir/plugins/profile``."""
        if self.is_chief:
            import tensorflow as tf

            tf.profiler.experimental.stop()


def register(name: str) -> Callable[[type[Mode]], type[Mode]]:
    """Register a mode class under ``name``, which the config schema must list."""

    def wrap(cls: type[Mode]) -> type[Mode]:
        if name not in MODE_NAMES:
            raise KeyError(f"mode {name!r} is missing from config.MODE_NAMES")
        if cls.__dict__.get("capabilities") is not MODE_CAPABILITIES[name]:
            raise TypeError(f"mode {name!r} must declare config.MODE_CAPABILITIES[{name!r}]")
        cls.name = name
        _MODES[name] = cls
        return cls

    return wrap


def registered() -> list[str]:
    return sorted(_MODES)


def declared() -> dict[str, Capabilities]:
    """Every registered mode's capabilities, in the order of ``config.MODE_NAMES``."""
    return {name: _MODES[name].capabilities for name in MODE_NAMES}


def get(name: str) -> type[Mode]:
    """The mode class registered as ``name``."""
    if name not in _MODES:
        raise UsageError(
            f"mode.name: {name!r} is not registered; registered: {', '.join(sorted(_MODES))}"
        )
    return _MODES[name]
