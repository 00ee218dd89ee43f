"""The tf.distribute modes: collective all-reduce over gRPC, and several local devices.

* ``collective_all_reduce``: ``MultiWorkerMirroredStrategy`` with the ring all-reduce,
  one replica per worker process; hvdbench writes ``TF_CONFIG`` from the cluster it
  resolved (spawned on loopback, from MPI ranks, or explicit), so no user writes one.
* ``replicated``: one process, ``MirroredStrategy`` over ``mode.num_devices`` local
  devices (on a CPU-only machine, logical CPU devices), gradients all-reduced.
* ``independent``: one process, a model and optimizer per device, nothing exchanged: the
  communication-free upper bound of the other modes.

Every device draws its synthetic batch from ``seed + device index``, and the loss is the
same :func:`hvdbench.components.training.loss_fn` as in the other modes.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hvdbench import models
from hvdbench.components import startup
from hvdbench.components.devices import local_device_names
from hvdbench.config import MODE_CAPABILITIES, Config
from hvdbench.data import make_input
from hvdbench.modes.grpc import cluster, spawn
from hvdbench.modes.grpc.cluster import describe
from hvdbench.modes.registry import Mode, register


def local_gradients(cfg: Config, model: Any, opt: Any, replicas: int = 1) -> Any:
    """``(images, labels) -> (loss, gradients)`` of one device's forward and backward pass
    (:func:`training.loss_and_gradients`: the loss divided by ``replicas`` where the
    optimizer sums the replicas' gradients, loss-scaled under float16; the gradients are
    still scaled). With ``train.jit_compile`` this pass is compiled by XLA; the exchange of
    gradients and the update stay outside the compiled function (the strategies'
    collectives, as Horovod's ops, are not XLA ops)."""
    from hvdbench.components import training

    wd = cfg.train.weight_decay

    def grads_of(images: Any, labels: Any) -> Any:
        return training.loss_and_gradients(
            model, opt, images, labels, wd, model.trainable_variables, replicas=replicas
        )

    if cfg.train.jit_compile:
        return training.xla_pass(grads_of)
    return grads_of


def make_replica_step(cfg: Config, strategy: Any, model: Any, opt: Any) -> Any:
    """One replica's training step under a tf.distribute strategy: the same loss as every
    mode, gradients averaged over the replicas (the optimizer sums them, so the loss is
    scaled by 1/replicas), clipped after the sum when clipping is on."""
    import tensorflow as tf

    from hvdbench.components import training

    clip_norm = cfg.train.gradient_clip_norm
    gradients = local_gradients(cfg, model, opt, strategy.num_replicas_in_sync)

    def replica_step(images: Any, labels: Any) -> Any:
        variables = model.trainable_variables
        loss, grads = gradients(images, labels)
        grads = training.unscale(opt, grads)
        if clip_norm > 0:
            grads = tf.distribute.get_replica_context().all_reduce("sum", grads)
            grads = training.clip(grads, clip_norm)
            opt.apply_gradients(zip(grads, variables), skip_gradients_aggregation=True)
        else:
            opt.apply_gradients(zip(grads, variables))
        return loss

    return replica_step


@register("collective_all_reduce")
class CollectiveAllReduceMode(Mode):
    """Keras model under ``MultiWorkerMirroredStrategy`` (gRPC ring all-reduce).

    Start-up bound: O(ranks) per worker, not O(1). The strategy reads every worker's
    address from ``TF_CONFIG`` (about 25 bytes a rank), so under MPI the addresses are
    all-gathered (:func:`cluster.exchange_addresses
    <hvdbench.modes.grpc.cluster.exchange_addresses>`), and its own start-up (the group's
    device list, the variables' broadcast) is O(ranks) per worker too. :meth:`exchange`
    reaches the chief only under MPI (an mpi4py gather, O(1) per worker); otherwise it is
    :meth:`gather`, an all-gather: the strategy's collectives have no gather to one task
    (all-reduce, all-gather and broadcast only), so each worker receives every rank's
    object, padded to the widest."""

    capabilities = MODE_CAPABILITIES["collective_all_reduce"]

    # Each worker holds its own copy of the variables: every worker restores the
    # checkpoint, and takes part in every save (the chief's is the real one).
    checkpoint_on_every_worker = True

    @classmethod
    def launch_local(cls, cfg: Config, rank_argv: list[str], dry_run: bool = False) -> int | None:
        return spawn.launch_local(cfg, rank_argv, dry_run)

    def setup(self) -> None:
        import tensorflow as tf

        from hvdbench.modes.grpc import runtime as grpc_runtime

        tf.get_logger().setLevel("ERROR")
        # Every worker's address: the strategy's TF_CONFIG lists them all (O(ranks) per
        # worker, the one start-up exchange that cannot be O(1); see the class docstring).
        self.membership = grpc_runtime.resolve(self.cfg, self.topo, self.layout, whole=True)
        spec, role = self.membership.spec.spec(), self.membership.role
        cluster.check_port_free(spec.address(role), f"worker task {role.index}")
        os.environ["TF_CONFIG"] = cluster.tf_config(spec, role)
        # The strategy takes one timeout for all its collectives. The first of them (the
        # initial variables' broadcast) is its start-up, so launch.startup_timeout_s bounds
        # it; during the run the watchdog names a lost or silent worker long before.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
            timeout_seconds=self.cfg.launch.startup_timeout_s,
        )
        startup.phase("waiting for every worker in MultiWorkerMirroredStrategy's start-up", True)
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)

    @property
    def worker_index(self) -> int:
        return self.membership.role.index

    @property
    def num_workers(self) -> int:
        return self.membership.spec.num_workers

    def build(self) -> None:
        import tensorflow as tf

        from hvdbench.components import training

        cfg = self.cfg
        training.set_precision_policy(cfg)
        tf.keras.utils.set_random_seed(cfg.train.seed)
        with self.strategy.scope():
            self.model = models.build(cfg)
            self.optimizer = training.make_optimizer(cfg.train)
            training.build_optimizer_state(self.optimizer, self.model.trainable_variables)
        self.input_shard = self.input_shards(cfg, self.num_workers)[self.worker_index]
        self.next_batch = make_input(
            cfg, models.input_shape(cfg), models.num_classes(cfg), *self.input_shard
        )
        model, opt, strategy = self.model, self.optimizer, self.strategy
        replica_step = make_replica_step(cfg, strategy, model, opt)

        @tf.function  # train.jit_compile compiles each replica's pass (local_gradients)
        def step(images: Any, labels: Any) -> Any:
            per_replica = strategy.run(replica_step, args=(images, labels))
            return strategy.experimental_local_results(per_replica)[0]

        self._step = step

    def initialize(self) -> None:
        """MirroredVariables start from the chief's values: the strategy broadcasts them."""

    def step(self) -> float:
        images, labels = self.next_batch()
        return float(self._step(images, labels))

    def _all_reduce_max(self, value: int) -> int:
        import tensorflow as tf

        t = tf.constant([value], tf.int64)  # ReduceOp has no MAX: gather, then max
        everyone = self.strategy.gather(self.strategy.run(lambda: tf.identity(t)), axis=0)
        return int(everyone.numpy().max())

    def gather(self, obj: Any) -> list[Any] | None:
        """Every worker's object: JSON bytes, padded to the longest, all-gathered."""
        import numpy as np
        import tensorflow as tf

        data = json.dumps(obj, default=str).encode()
        width = self._all_reduce_max(len(data))
        padded = np.zeros([1, width + 8], np.int32)  # collectives take no uint8
        padded[0, :8] = np.frombuffer(len(data).to_bytes(8, "little"), np.uint8)
        padded[0, 8 : 8 + len(data)] = np.frombuffer(data, np.uint8)
        local = tf.constant(padded)
        everyone = self.strategy.gather(self.strategy.run(lambda: tf.identity(local)), axis=0)
        rows = everyone.numpy()
        out = []
        for row in rows.astype(np.uint8):
            n = int.from_bytes(row[:8].tobytes(), "little")
            out.append(json.loads(row[8 : 8 + n].tobytes()))
        return out

    def exchange(self, obj: Any) -> list[Any] | None:
        """Every worker's start-up object on the chief. Under MPI an mpi4py gather to
        rank 0 (worker 0, there is no ps): O(ranks) on the chief, O(1) per worker.
        Otherwise :meth:`gather`, the strategy's all-gather: O(ranks) per worker (see the
        class docstring)."""
        if not self.membership.under_mpi:
            return self.gather(obj)
        from mpi4py import MPI

        items = MPI.COMM_WORLD.gather(obj, root=0)
        return None if items is None else list(items)

    def any_rank(self, flag: bool) -> bool:
        return self._all_reduce_max(1 if flag else 0) > 0

    def details(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "communication": "RING",
            "roles_from": "mpi ranks" if self.membership.under_mpi else "explicit cluster",
            "replicas_in_sync": int(self.strategy.num_replicas_in_sync),
            "input_shard": list(self.input_shard),
            **describe(self.membership.spec, self.membership.role),
        }

    def shutdown(self) -> None:
        # The strategy's gRPC server cannot be stopped; the workers leave together, so
        # no one waits on a peer that has gone (see grpc_runtime.exit_process).
        if hasattr(self, "strategy"):
            self.any_rank(False)


class LocalDevicesMode(Mode):
    """One process, ``mode.num_devices`` devices; reported as that many compute devices."""

    _step: Any
    _real_input: Any = None  # the per-device input, which swap_input swaps back to

    def setup(self) -> None:
        import tensorflow as tf

        n = self.cfg.mode.num_devices
        gpus = tf.config.get_visible_devices("GPU")
        self.devices = local_device_names(n, len(gpus))  # refuses too few GPUs
        if not gpus:  # a machine without GPUs: n logical devices on the CPU
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
            )

    @property
    def worker_index(self) -> int:
        return 0

    @property
    def num_workers(self) -> int:
        return len(self.devices)

    @staticmethod
    def input_shards(cfg: Config, num_workers: int) -> list[tuple[int, int]]:
        """One shard per device: device ``d`` reads shard ``d`` of ``mode.num_devices``."""
        n = cfg.mode.num_devices
        return [(d, n) for d in range(n)]

    def _make_input(self) -> None:
        """``self.next_batch``: one (images, labels) batch per device, each from its own
        shard of the split (or its own synthetic batch, ``seed + device``), on the device."""
        import tensorflow as tf

        cfg = self.cfg
        shape, classes = models.input_shape(cfg), models.num_classes(cfg)
        shards = self.input_shards(cfg, len(self.devices))
        self.device_inputs = []
        for d, shard in zip(self.devices, shards):
            if cfg.data.source == "synthetic":
                with tf.device(d):  # generated once, on its device
                    self.device_inputs.append(make_input(cfg, shape, classes, *shard))
            else:
                self.device_inputs.append(_on_device(d, make_input(cfg, shape, classes, *shard)))
        self.next_batch = self._real_input = self._next_batches

    def _next_batches(self) -> list[tuple[Any, Any]]:
        return [next_batch() for next_batch in self.device_inputs]

    def swap_input(self, next_batch: Any) -> Any:
        """``next_batch`` returns one batch (the hooks' synthetic input): every device
        trains on it; the previous source (one batch per device) is returned."""
        previous = self.next_batch
        if next_batch is self._real_input:
            self.next_batch = next_batch
        else:
            self.next_batch = lambda: [next_batch()] * len(self.devices)
        return previous

    def initialize(self) -> None:
        """Each model starts from the same seed."""

    def summary_histograms(self, with_gradients: bool) -> dict[str, Any]:
        """As in every mode, on the first device's model and next batch."""
        per_device = self.next_batch
        self.next_batch = lambda: per_device()[0]
        try:
            return super().summary_histograms(with_gradients)
        finally:
            self.next_batch = per_device

    def step(self) -> float:
        return float(self._step(self.next_batch()))

    def gather(self, obj: Any) -> list[Any] | None:
        """One measured process, which drives every device: its entry says how many."""
        entry = json.loads(json.dumps(obj, default=str))
        if isinstance(entry, dict) and "step_times" in entry:
            entry["devices"] = len(self.devices)
        return [entry]

    def any_rank(self, flag: bool) -> bool:
        return flag

    def details(self) -> dict[str, Any]:
        shards = self.input_shards(self.cfg, len(self.devices))
        return {"devices": self.devices, "processes": 1, "input_shards": shards}


@register("replicated")
class ReplicatedMode(LocalDevicesMode):
    """``MirroredStrategy`` over the local devices: gradients all-reduced in process."""

    capabilities = MODE_CAPABILITIES["replicated"]

    def build(self) -> None:
        import tensorflow as tf

        from hvdbench.components import training

        cfg = self.cfg
        training.set_precision_policy(cfg)
        tf.keras.utils.set_random_seed(cfg.train.seed)
        strategy = tf.distribute.MirroredStrategy(self.devices)
        self.strategy = strategy
        with strategy.scope():
            model = models.build(cfg)
            opt = training.make_optimizer(cfg.train)
            training.build_optimizer_state(opt, model.trainable_variables)
        self.model, self.optimizer = model, opt
        self._make_input()
        train_replica = make_replica_step(cfg, strategy, model, opt)

        def replica_step(batch: Any) -> Any:
            return train_replica(*batch)

        @tf.function
        def replicated_step(data: Any) -> Any:
            losses = strategy.run(replica_step, args=(data,))
            return strategy.reduce("MEAN", losses, axis=None)

        def step(batches: list[tuple[Any, Any]]) -> Any:
            data = strategy.experimental_distribute_values_from_function(
                lambda ctx: batches[ctx.replica_id_in_sync_group]
            )
            return replicated_step(data)

        self._step = step

    def details(self) -> dict[str, Any]:
        return {
            **super().details(),
            "cross_device_ops": type(self.strategy.extended._cross_device_ops).__name__,
        }


@register("independent")
class IndependentMode(LocalDevicesMode):
    """A model per device and no exchange at all."""

    capabilities = MODE_CAPABILITIES["independent"]

    def build(self) -> None:
        import tensorflow as tf

        from hvdbench.components import training

        cfg = self.cfg
        training.set_precision_policy(cfg)
        clip_norm = cfg.train.gradient_clip_norm
        towers = []
        for d in self.devices:
            tf.keras.utils.set_random_seed(cfg.train.seed)
            with tf.device(d):
                model = models.build(cfg)
                opt = training.make_optimizer(cfg.train)
                training.build_optimizer_state(opt, model.trainable_variables)
            towers.append((d, model, opt, local_gradients(cfg, model, opt)))
        self.towers = towers
        self.model, self.optimizer = towers[0][1], towers[0][2]
        self._make_input()

        @tf.function
        def step(batches: list[tuple[Any, Any]]) -> Any:
            losses = []
            for (d, model, opt, gradients), (images, labels) in zip(towers, batches):
                with tf.device(d):
                    variables = model.trainable_variables
                    loss, grads = gradients(images, labels)
                    training.apply_gradients(opt, grads, variables, clip_norm)
                    losses.append(loss)
            return tf.add_n(losses) / len(losses)

        self._step = step

    def keras_optimizers(self) -> list[Any]:
        return [t[2] for t in self.towers]

    def checkpoint_objects(self) -> dict[str, Any]:
        """The first device's model and optimizer under the keys every mode uses (what
        `hvdbench eval` reads), the other devices' beside them."""
        import tensorflow as tf

        others = tf.Module()
        others.models = [t[1] for t in self.towers[1:]]
        others.optimizers = [t[2] for t in self.towers[1:]]
        return {"model": self.model, "optimizer": self.optimizer, "other_devices": others}


def _on_device(device: str, next_batch: Any) -> Any:
    """``next_batch`` whose batch is placed on ``device`` (a copy, if it is elsewhere)."""
    import tensorflow as tf

    def placed() -> Any:
        images, labels = next_batch()
        with tf.device(device):
            return tf.identity(images), tf.identity(labels)

    return placed
