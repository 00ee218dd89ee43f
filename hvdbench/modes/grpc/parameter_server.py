"""Between-graph replication with parameter servers (``tf.compat.v1``).

Every worker builds its own graph; ``replica_device_setter`` puts the variables on the ps
tasks, balanced by byte size (:mod:`hvdbench.modes.grpc.placement`), and the computation on the
worker. Worker 0, the chief, initialises the variables through ``MonitoredTrainingSession``
and writes the record; the other workers wait for its word before they start.

* **sync** (``ps.sync``): ``SyncReplicasOptimizer`` aggregates ``replicas_to_aggregate``
  gradients per global step (all workers by default; fewer makes the slowest workers
  backups whose late gradients are dropped).
* **async**: each worker applies its own gradients as soon as it has them.
* **staged_vars**: see :mod:`hvdbench.modes.grpc.staging`.

Ending a synchronous job takes care: a worker that has finished its measured steps keeps
contributing gradients (unmeasured) until every worker has finished, so that no one waits
for a gradient that will never come; the last one to finish releases any worker still
waiting for a token. The chief then stops the ps tasks through their control queues.
With backup workers, a non-chief worker that dies is left out of that ending (the drain,
the collection of measurements, the final barrier): see :mod:`hvdbench.modes.grpc.lost_workers`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any, NamedTuple

from hvdbench import models
from hvdbench.components import record, startup
from hvdbench.config import MODE_CAPABILITIES, Config
from hvdbench.errors import ClusterError
from hvdbench.modes.grpc import lost_workers, spawn
from hvdbench.modes.grpc.cluster import describe
from hvdbench.modes.grpc.placement import GreedyByteSize
from hvdbench.modes.registry import Mode, register

_REAL_INPUT: Any = object()  # swap_input's marker for the graph's real input


class ForwardPass(NamedTuple):
    """What a mode's ``_gradients`` builds for one step."""

    loss: Any
    pairs: list[tuple[Any, Any]]  # (gradient, ps variable)
    before_update: list[Any]  # what the update must follow (the ps values read for staging)
    with_step: list[Any]  # what else runs each step, in no order with the update


class GrpcGraphMode(Mode):
    """The parts of the ps modes around the graph: cluster, servers, control, shutdown."""

    _input_marker: Any = _REAL_INPUT

    # Checkpoints and summaries (the chief's; see hvdbench.modes.grpc.graph_state)
    mirror: Any = None  # the GraphMirror, with checkpoint.dir on the chief
    _last_gradients: list[tuple[str, Any]] | None = None  # summary.verbosity >= 2
    _restored_step: int | None = None  # to load into the graph at the next session
    _reload: Any = None  # restores the newest checkpoint again; returns its step
    _graph_sessions: int = 0  # sessions the chief has created (more than 1: recovered)
    _start_global_step: int = 0  # the global step this run started from (restored)

    @classmethod
    def launch_local(cls, cfg: Config, rank_argv: list[str], dry_run: bool = False) -> int | None:
        return spawn.launch_local(cfg, rank_argv, dry_run)

    # --- setup -------------------------------------------------------------------------

    def setup(self) -> None:
        import tensorflow as tf

        from hvdbench.modes.grpc import runtime as gr

        cfg = self.cfg
        tf.get_logger().setLevel("ERROR")  # tf.compat.v1's deprecation notices
        self.membership = gr.resolve(cfg, self.topo, self.layout)
        spec, role = self.membership.spec, self.membership.role
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        self.session_config = gr.session_config(role, intra, inter)
        self.grpc_options = gr.apply_channel_options(cfg)  # before any channel exists
        self.server = gr.start_server(self.membership, self.session_config)
        if role.is_ps:
            gr.serve_ps(self.membership, cfg, self.server, intra, inter)  # never returns
        startup.phase("waiting for the ps tasks' gRPC servers", waiting=True)
        gr.wait_for_tasks(list(spec.ps), cfg.launch.startup_timeout_s, "a ps task")
        self._closed = False
        self._extras: list[dict[str, Any]] = []
        self._global_steps: list[int] = []
        self._steps_done = 0
        self._timeline_dir: str | None = None  # while tracing: where step timelines go
        self._traced_steps: list[tuple[int, Any]] = []  # (step, its StepStats) to write
        self._lost: set[int] = set()  # workers left out (backup workers; chief only)

    @property
    def worker_index(self) -> int:
        return self.membership.role.index

    @property
    def num_workers(self) -> int:
        return self.membership.spec.num_workers

    @property
    def sync(self) -> bool:
        return self.cfg.ps.sync

    @property
    def replicas_to_aggregate(self) -> int:
        return self.cfg.ps.replicas_to_aggregate or self.num_workers

    def lockstep(self) -> bool:
        """Synchronous updates of every worker's gradients; not async, nor backup workers
        (whose slowest workers' gradients are dropped, so no one waits for them)."""
        return self.sync and self.replicas_to_aggregate >= self.num_workers

    def gradient_counts(self) -> tuple[int, int, int] | None:
        if not self.sync or self.replicas_to_aggregate >= self.num_workers or not self._extras:
            return None
        steps = self.read_global_step() - self._start_global_step
        computed = sum(len(e["global_steps_seen"]) + e["drained_steps"] for e in self._extras)
        return steps, self.replicas_to_aggregate, computed

    def tolerates_lost_workers(self) -> bool:
        """Synchronous with backup workers, and not under MPI (whose launcher ends the
        whole job when a rank dies): see :mod:`hvdbench.modes.grpc.lost_workers`."""

        return not self.membership.under_mpi and lost_workers.tolerates(self.cfg, self.num_workers)

    def worker_lost(self, index: int) -> None:
        self._lost.add(index)
        self.control.finished(index)  # the others' drains stop waiting for it

    def _live_workers(self) -> int:
        return self.num_workers - len(self._lost)

    # --- the session -------------------------------------------------------------------

    def initialize(self) -> None:
        import tensorflow as tf

        v1 = tf.compat.v1
        cfg = self.cfg
        self.control.open(self.server.target, self.session_config, self.graph)
        if self.is_chief:
            self.control.start_heartbeat(max(0.5, min(5.0, cfg.ps.idle_timeout_s / 4)))
        else:
            startup.phase("waiting for the chief to initialise the variables", waiting=True)
            self.control.wait_ready(cfg.launch.startup_timeout_s)
        startup.phase("opening the training session on the ps tasks", waiting=True)
        hooks = list(self.hooks)
        try:
            with self.graph.as_default():
                # The chief loads the checkpoint into the graph right after initialising the
                # variables, before the SyncReplicasOptimizer hook reads the global step and
                # before any worker hears that the variables are ready; and again whenever
                # its session is recreated (a ps task restarted without its variables).
                scaffold = (
                    v1.train.Scaffold(init_fn=self._restore_into_graph)
                    if self.mirror is not None
                    else None
                )
                # SyncReplicasOptimizer's chief queue runner waits for gradients that no
                # longer come: closing the session cancels it, no need to wait the default
                # 120 s for it first.
                grace = 1
                if self.is_chief:
                    self.sess = v1.train.MonitoredTrainingSession(
                        master=self.server.target,
                        is_chief=True,
                        scaffold=scaffold,
                        hooks=hooks,
                        config=self.session_config,
                        checkpoint_dir=None,
                        save_checkpoint_secs=None,
                        save_checkpoint_steps=None,
                        save_summaries_steps=None,
                        save_summaries_secs=None,
                        log_step_count_steps=None,
                        max_wait_secs=cfg.launch.startup_timeout_s,
                        stop_grace_period_secs=grace,
                    )
                else:
                    creator = _WorkerSessionCreator(
                        self.server.target, self.session_config, cfg.launch.startup_timeout_s
                    )
                    self.sess = v1.train.MonitoredSession(
                        session_creator=creator, hooks=hooks, stop_grace_period_secs=grace
                    )
        except tf.errors.DeadlineExceededError:
            raise ClusterError(
                f"worker {self.worker_index}: no session within "
                f"{cfg.launch.startup_timeout_s:g} s (launch.startup_timeout_s)"
            ) from None
        if self.is_chief:
            self.control.announce_ready()
        # Start together: a chief that began alone would fill every synchronous step
        # with its own gradients while the others are still opening their sessions.
        self.any_rank(False)

    def after_session(self, sess: Any) -> None:  # noqa: B027 - hook for subclasses
        """Run on every new training session, the first and every one recreated after a
        lost ps task (e.g. refill the worker's local state from the ps variables)."""

    # --- checkpoints and summaries (chief; see hvdbench.modes.grpc.graph_state) -------------

    def _restore_into_graph(self, scaffold: Any, sess: Any) -> None:
        if self._graph_sessions > 0 and self._reload is not None:
            from hvdbench.modes.grpc.graph_state import eagerly

            self._restored_step = eagerly(self._reload)
        self._graph_sessions += 1
        if self._restored_step is not None:
            self.mirror.push(sess, self._restored_step)

    def adopt_checkpoint(self, global_step: int | None, reload: Any) -> None:
        self._restored_step, self._reload = global_step, reload
        self._start_global_step = global_step or 0

    def checkpoint_objects(self) -> dict[str, Any]:
        return self.mirror.checkpoint_objects()

    def before_checkpoint(self) -> int | None:
        with self.graph.as_default():
            return int(
                self.sess.run_step_fn(lambda step_context: self.mirror.pull(step_context.session))
            )

    def current_global_step(self) -> int | None:
        return self._global_steps[-1] if self._global_steps else None

    def summary_histograms(self, with_gradients: bool) -> dict[str, Any]:
        """The ps variables' values now, and this worker's gradients of its last step."""
        variables = self.model_variables
        with self.graph.as_default():
            values = self.sess.run_step_fn(lambda step_context: step_context.session.run(variables))
        out = {f"weights/{v.name}": x for v, x in zip(variables, values)}
        if with_gradients and self._last_gradients is not None:
            out.update({f"gradients/{n}": g for n, g in self._last_gradients})
        return out

    def swap_input(self, next_batch: Any) -> Any:
        """Train on the graph's synthetic batch, or back on its real input: the input is
        part of the graph, so ``next_batch`` only says which (the real input is the
        marker this method returned)."""
        previous = self._input_marker
        real = next_batch is _REAL_INPUT
        self.input.select(synthetic=not real)
        self._input_marker = _REAL_INPUT if real else next_batch
        return previous

    def start_trace(self, logdir: str) -> None:
        """TensorFlow's profile on the chief, and on every worker a step timeline of each
        traced step: the ops of every task the step ran on (this worker's and the ps
        tasks' partitions), from the session's own trace (``RunOptions.FULL_TRACE``), as
        ``timeline-worker<i>-step<n>.json`` in Chrome's trace format (Perfetto or
        chrome://tracing open it). A transfer that waits shows as a long ``RecvTensor``.
        The steps keep their traces; :meth:`stop_trace` writes them, outside the timed
        steps."""
        super().start_trace(logdir)
        self._timeline_dir = logdir

    def stop_trace(self) -> None:
        super().stop_trace()
        from tensorflow.python.client import timeline

        for step, stats in self._traced_steps:
            name = f"timeline-worker{self.worker_index}-step{step}.json"
            trace = timeline.Timeline(stats).generate_chrome_trace_format()
            assert self._timeline_dir is not None
            record.write_atomic(os.path.join(self._timeline_dir, name), json.loads(trace))
        self._timeline_dir, self._traced_steps = None, []

    def _run_step(self) -> list[Any]:
        """One session step of ``self.fetches``; traced while a trace is on."""
        if self._timeline_dir is None:
            return list(self.sess.run(self.fetches, feed_dict=self.input.feed))
        import tensorflow as tf

        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        meta = tf.compat.v1.RunMetadata()
        out = self.sess.run(
            self.fetches, feed_dict=self.input.feed, options=options, run_metadata=meta
        )
        self._traced_steps.append((self._steps_done + 1, meta.step_stats))
        return list(out)

    def step(self) -> float:
        ps = self.cfg.ps
        if ps.debug_slow_worker == self.worker_index and ps.debug_slow_seconds > 0:
            time.sleep(ps.debug_slow_seconds)
        # In the graph's context: a session recreated after a lost ps finalises its
        # Scaffold again, which must not happen in eager mode.
        with self.graph.as_default():
            _, loss, global_step, *grads = self._run_step()
        if grads:
            self._last_gradients = list(zip(self._gradient_names, grads[0]))
        self._steps_done += 1
        self._global_steps.append(int(global_step))
        return float(loss)

    def _drain(self) -> None:
        """Keep a synchronous job moving until every worker has finished its steps."""
        if self.tolerates_lost_workers():
            # a worker the chief left out will never say it is done: count the finished
            # and the lost workers together, each once
            n = self.control.finished(self.worker_index)
            count = self.control.finished_count
        else:
            n = self.control.mark_done()
            count = self.control.done_count
        drained = 0
        while n < self.num_workers:
            with self.graph.as_default():  # a session recreated here finalizes its Scaffold
                self.sess.run(self.train_op)
            drained += 1
            n = count()
        if drained == 0:  # the last to finish: free anyone still waiting for a token
            self.control._run(self.release_op, timeout_s=60)
        self.drained_steps = drained

    def _collection_timeout(self) -> float:
        """The end-of-run collection and barriers wait for the slowest worker to finish its
        steps, which no key bounds; the watchdog ends the job if a worker dies or falls
        silent, and this is the last resort behind it."""
        return self.cfg.launch.startup_timeout_s + self.cfg.ps.idle_timeout_s

    def gather(self, obj: Any) -> list[Any] | None:
        timeout = self._collection_timeout()
        self.drained_steps = 0
        if self.sync:
            self._drain()
        extra = {
            "worker": self.worker_index,
            "global_steps_seen": self._global_steps,
            "drained_steps": self.drained_steps,
            # what this worker was given of the cluster: O(num_ps) unless it is the chief
            "addresses_known": self.membership.spec.num_addresses,
        }
        if not self.is_chief:
            self._close_training_session()
            self.control.put({"index": self.worker_index, "obj": obj, "extra": extra})
            return None
        if self.tolerates_lost_workers():
            items = self._take_live(timeout)
        else:
            items = self.control.take(self.num_workers - 1, timeout)
        items.append({"index": 0, "obj": obj, "extra": extra})
        items.sort(key=lambda d: d["index"])
        self._extras = [d["extra"] for d in items]
        return [d["obj"] for d in items]

    def _take_live(self, timeout_s: float) -> list[dict[str, Any]]:
        """The chief's collection when workers may be lost: every other worker's item,
        except those of the workers left out (also one lost while the chief waits)."""

        deadline = time.monotonic() + timeout_s
        items: list[dict[str, Any]] = []
        while True:
            missing = set(range(1, self.num_workers)) - {d["index"] for d in items} - self._lost
            if not missing:
                return items
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"no measurements from worker(s) {sorted(missing)} within {timeout_s:g} s"
                )
            item = self.control.take_one(1.0)
            if item is not None:
                items.append(item)

    def exchange(self, obj: Any) -> list[Any] | None:
        """Start-up exchange through ps 0's gather queue; the training session stays open.
        O(ranks) on the chief, which alone takes from the queue; O(1) per worker."""
        if not self.is_chief:
            self.control.put({"index": self.worker_index, "obj": obj, "extra": {}})
            return None
        items = self.control.take(self.num_workers - 1, self.cfg.launch.startup_timeout_s)
        items.append({"index": 0, "obj": obj})
        items.sort(key=lambda d: d["index"])
        return [d["obj"] for d in items]

    def any_rank(self, flag: bool) -> bool:
        timeout = self._collection_timeout()
        if self.tolerates_lost_workers():
            return self.control.any_live(flag, self.is_chief, self._live_workers, timeout)
        return self.control.any_rank(flag, self.is_chief, timeout)

    def agree_stop(self, flag: bool) -> bool:
        """A stop flag shared through ps 0, which no worker waits on.

        ``SyncReplicasOptimizer`` counts gradients, not workers, so one worker can run many
        steps ahead of another; a barrier at a fixed step (``any_rank``) would then hold
        the worker that arrived first while the other still needs its gradients to get
        there, and both would wait for ever. Instead a worker that was signalled raises
        the flag and stops, every worker stops at its next check after that, and the
        end of the run (``gather``'s drain) keeps the stragglers' steps going."""
        return self.control.stop_flag(flag)

    def read_variables(self) -> list[Any]:
        """The current values of the model's trainable variables (for tests and checks)."""
        return list(self.sess.run(self.model_variables))

    def read_global_step(self) -> int:
        return int(self.sess.run(self.global_step_read))

    def _close_training_session(self) -> None:
        import tensorflow as tf

        if self._closed:
            return
        self._closed = True
        try:
            with _quiet_cancelled_runners():
                self.sess.close()
        except (tf.errors.CancelledError, tf.errors.OutOfRangeError):
            # SyncReplicasOptimizer's chief queue runner is cancelled while its session
            # closes: the normal end of a synchronous job, not a failure.
            pass
        except RuntimeError as e:  # the coordinator re-raises the runner's error wrapped
            if "Cancelled" not in str(e) and "cancelled" not in str(e):
                raise

    def shutdown(self) -> None:
        if not hasattr(self, "control"):
            return
        if hasattr(self, "sess"):
            self._close_training_session()
        if self.is_chief and self.control.sess is not None:
            self.control.stop_ps()
        self.control.close()

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "num_ps": len(self.membership.spec.ps),
            "num_workers": self.num_workers,
            "sync": self.sync,
            "replicas_to_aggregate": self.replicas_to_aggregate if self.sync else None,
            "staged_vars": self.cfg.ps.staged_vars,
            "pack_transfers": self.cfg.ps.pack_transfers,
            "grpc_bdp_probe": self.cfg.ps.grpc_bdp_probe,
            "TF_GRPC_DEFAULT_OPTIONS": self.grpc_options,
            "input_shard": list(self.input_shard),
            "roles_from": "mpi ranks" if self.membership.under_mpi else "explicit cluster",
            **describe(self.membership.spec, self.membership.role),
            "placement": {
                "bytes_per_ps": list(self.placer.loads),
                "share_per_ps": self.placer.shares(),
                "variables": [{"name": n, "bytes": b, "ps": t} for n, b, t in self.placer.placed],
            },
            "workers": self._extras,
        }
        try:
            out["final_global_step"] = self.read_global_step()
        except Exception:  # noqa: BLE001 - a detail, never a reason to lose the record
            out["final_global_step"] = None
        return out

    def build(self) -> None:
        import tensorflow as tf

        from hvdbench.components import training
        from hvdbench.modes.grpc import graph_input, packing
        from hvdbench.modes.grpc import graph_training as gt
        from hvdbench.modes.grpc.runtime import ControlPlane

        v1 = tf.compat.v1
        cfg = self.cfg
        spec = self.membership.spec
        num_ps, n = len(spec.ps), self.num_workers
        self.worker_device = f"/job:worker/task:{self.worker_index}"
        self.graph = tf.Graph()
        self.placer = GreedyByteSize(num_ps)
        with self.graph.as_default():
            v1.set_random_seed(cfg.train.seed)
            tf.keras.utils.set_random_seed(cfg.train.seed)
            setter = v1.train.replica_device_setter(
                ps_tasks=num_ps,
                worker_device=self.worker_device,
                cluster=tf.train.ClusterSpec(spec.as_dict()),
                ps_strategy=self.placer,
            )
            self.input_shard = self.input_shards(cfg, n)[self.worker_index]
            self.input = graph_input.build(cfg, self.worker_device, *self.input_shard)
            images, labels = self.input.images, self.input.labels
            with v1.device(setter):
                global_step = v1.train.get_or_create_global_step()
                model = models.build(cfg)
                self.model_variables = model.trainable_variables
                opt = training.make_v1_optimizer(cfg.train)
                if self.sync:
                    # Packed, one accumulator per ps task (packing.PackedGradient), whose
                    # average SplitApply splits back for the optimizer.
                    inner = packing.SplitApply(opt) if cfg.ps.pack_transfers else opt
                    opt = v1.train.SyncReplicasOptimizer(
                        inner,
                        replicas_to_aggregate=self.replicas_to_aggregate,
                        total_num_replicas=n,
                    )
                first_op = len(self.graph.get_operations())
                self._statistics_updates: list[Any] | None = None
                step = self._gradients(opt, model, images, labels)
                loss = step.loss
                # Batch norm's moving averages: in a v1 graph nothing runs unless fetched,
                # so the updates of this forward pass run with every step: packed (one op
                # per ps task), or the graph's own assign_sub ops. Nothing waits for them:
                # when the gradients did, the step's tail was a round trip longer (the
                # moments crossed, then a control edge back, then the gradients).
                if self._statistics_updates is None:
                    self._statistics_updates = gt.moving_average_updates(self.graph, first_op)
                with_step = step.with_step + self._statistics_updates
                computed = training.clip_pairs(step.pairs, cfg.train.gradient_clip_norm)
                gv = computed
                # The ordering goes on the gradients, not around apply_gradients, whose
                # side ops (SyncReplicasOptimizer's readiness checks) must not wait for a
                # step; packed, on each ps task's share of its gradients, there.
                if cfg.ps.pack_transfers and self.sync:
                    gv = packing.gradients_to_accumulators(gv, after=step.before_update)
                elif cfg.ps.pack_transfers:
                    gv = packing.gradients_to_ps(gv, after=step.before_update)
                elif step.before_update:
                    with tf.control_dependencies(step.before_update):
                        gv = [(tf.identity(g), v) for g, v in gv]
                with packing.one_local_step_read() if cfg.ps.pack_transfers else nullcontext():
                    apply = opt.apply_gradients(gv, global_step=global_step)
                # Run as targets of their own: each on its task, with no control edge
                # back to the worker (a tf.group would make one per task).
                self.train_op = [self._after_apply(apply), *with_step]
                self.global_step_read = tf.identity(global_step)
                self.fetches = [self.train_op, loss, self.global_step_read]
                if self.is_chief and cfg.summary.dir and cfg.summary.verbosity >= 2:
                    # gradient histograms: this worker's gradients, fetched with each step
                    self.fetches.append([g for g, _ in computed])
                    self._gradient_names = [v.name for _, v in computed]
                # No initial tokens (TensorFlow's default is replicas_to_aggregate of
                # them): with them each worker's first step returns before the first
                # update, so its second gradient is computed on the initial weights and
                # dropped as stale. Without them, every gradient of a worker that keeps
                # pace is applied, and one worker's steps are plain synchronous SGD.
                self.hooks = (
                    [opt.make_session_run_hook(self.is_chief, num_tokens=0)] if self.sync else []
                )
                self.hooks.append(_after_session_hook(self.after_session))
                if self.sync:
                    with tf.device(global_step.device):
                        tokens = tf.fill([n], global_step.read_value())
                        self.release_op = opt._sync_token_queue.enqueue_many((tokens,))
            self.control = ControlPlane(num_ps, n)
        if self.is_chief and cfg.checkpoint.dir:
            from hvdbench.modes.grpc.graph_state import GraphMirror

            self.mirror = GraphMirror(
                self.graph, model.variables, global_step, lambda: models.build(cfg)
            )

    def _gradients(self, opt: Any, model: Any, images: Any, labels: Any) -> ForwardPass:
        """The loss, (gradient, ps variable) pairs, and what the update must follow and
        what must run with it."""
        from hvdbench.components import training

        # Reached unpacked only (packed, every mode computes on a worker-local buffer), so
        # build() collects this pass's batch-norm updates from the graph.
        loss = training.loss_fn(model, images, labels, self.cfg.train.weight_decay)
        return ForwardPass(loss, opt.compute_gradients(loss, var_list=self.model_variables), [], [])

    @contextlib.contextmanager
    def _statistics(self, forward: Any, ps_model: Any = None) -> Iterator[None]:
        """Around building ``forward``'s pass: with ``ps.pack_transfers``, its batch-norm
        updates are deferred and built packed, on ``ps_model``'s statistics when
        ``forward`` is a local copy (:mod:`hvdbench.modes.grpc.moving_stats`)."""
        if not self.cfg.ps.pack_transfers:
            yield
            return
        from hvdbench.modes.grpc import graph_training as gt
        from hvdbench.modes.grpc import moving_stats

        first_op = len(self.graph.get_operations())
        with moving_stats.deferred(forward) as pending:
            yield
        not_deferred = gt.moving_average_updates(self.graph, first_op)  # e.g. renorm's
        targets = moving_stats.statistics_map(forward, ps_model) if ps_model is not None else None
        self._statistics_updates = not_deferred + moving_stats.build_updates(pending, targets)

    def _after_apply(self, apply: Any) -> Any:
        return apply


@register("parameter_server")
class ParameterServerMode(GrpcGraphMode):
    """Variables on the ps tasks; workers compute; sync or async updates."""

    capabilities = MODE_CAPABILITIES["parameter_server"]

    staging: Any = None

    def _gradients(self, opt: Any, model: Any, images: Any, labels: Any) -> ForwardPass:
        cfg = self.cfg
        if not cfg.ps.staged_vars and not cfg.ps.pack_transfers:
            return super()._gradients(opt, model, images, labels)
        import tensorflow as tf

        from hvdbench.components import training
        from hvdbench.modes.grpc.graph_training import LocalCopy
        from hvdbench.modes.grpc.staging import StagedVariables

        if not cfg.ps.staged_vars:
            # Packed reads: the ps values, read in one transfer per ps task at the start
            # of the step (as the unpacked reads are), into a buffer the step computes on.
            with tf.compat.v1.device(None):  # the buffer stays off the ps
                self.reads = LocalCopy(model, lambda: models.build(cfg), self.worker_device, True)
            with self._statistics(self.reads.local_model, model):
                with tf.control_dependencies([self.reads.refresh]):
                    loss = training.loss_fn(
                        self.reads.local_model, images, labels, cfg.train.weight_decay
                    )
            return ForwardPass(loss, self.reads.gradients(loss), [], [])
        with tf.compat.v1.device(None):  # the local copy stays off the ps
            self.staging = StagedVariables(
                model, lambda: models.build(cfg), self.worker_device, cfg.ps.pack_transfers
            )
        wd = cfg.train.weight_decay
        with self._statistics(self.staging.local_model, model):
            loss = self.staging.compute_after_take(
                lambda m: training.loss_fn(m, images, labels, wd)
            )
        # The ps values for the next step are read before this step's update.
        staging = self.staging
        return ForwardPass(loss, staging.gradients(loss), staging.read_before, [staging.refill])

    def after_session(self, sess: Any) -> None:
        if self.staging is not None:
            self.staging.prime(sess)


@register("distributed_replicated")
class DistributedReplicatedMode(GrpcGraphMode):
    """Each worker computes on its own copy of the variables; the gradients are
    aggregated into the shadow variables on the ps (sync or async, as in
    parameter_server), and each worker then refreshes its copy from them."""

    capabilities = MODE_CAPABILITIES["distributed_replicated"]

    def _gradients(self, opt: Any, model: Any, images: Any, labels: Any) -> ForwardPass:
        import tensorflow as tf

        from hvdbench.components import training
        from hvdbench.modes.grpc.graph_training import LocalCopy

        cfg = self.cfg
        with tf.compat.v1.device(None):  # the copy stays on the worker
            self.copy = LocalCopy(
                model, lambda: models.build(cfg), self.worker_device, cfg.ps.pack_transfers
            )
        with self._statistics(self.copy.local_model, model):
            loss = training.loss_fn(self.copy.local_model, images, labels, cfg.train.weight_decay)
        return ForwardPass(loss, self.copy.gradients(loss), [], [])

    def _after_apply(self, apply: Any) -> Any:
        return self.copy.refresh_after(apply)

    def after_session(self, sess: Any) -> None:
        sess.run(self.copy.refresh)  # start from the ps values (initial, or restored)


def _after_session_hook(fn: Any) -> Any:
    """A session hook that calls ``fn(session)`` whenever MonitoredSession creates a
    session: at the start, and again when it recovers from an aborted one."""
    import tensorflow as tf

    class AfterSession(tf.compat.v1.train.SessionRunHook):  # type: ignore[misc]
        def after_create_session(self, session: Any, coord: Any) -> None:
            fn(session)

    return AfterSession()


def _WorkerSessionCreator(target: str, config: Any, max_wait_s: float) -> Any:
    """A non-chief's sessions, as MonitoredTrainingSession's own but polling every
    second, not every 30 s, for the chief to (re)initialise the variables: a worker whose
    session was aborted by a lost ps task then rejoins as soon as the chief has reloaded
    the checkpoint, instead of giving up when ``launch.startup_timeout_s`` is under 30 s."""
    import tensorflow as tf

    v1 = tf.compat.v1

    class Creator(v1.train.SessionCreator):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            self.scaffold = v1.train.Scaffold()

        def create_session(self) -> Any:
            self.scaffold.finalize()
            manager = v1.train.SessionManager(
                local_init_op=self.scaffold.local_init_op,
                local_init_feed_dict=self.scaffold.local_init_feed_dict,
                ready_op=self.scaffold.ready_op,
                ready_for_local_init_op=self.scaffold.ready_for_local_init_op,
                graph=v1.get_default_graph(),
                recovery_wait_secs=WORKER_RECOVERY_POLL_S,
            )
            return manager.wait_for_session(target, config=config, max_wait_secs=max_wait_s)

    return Creator()


WORKER_RECOVERY_POLL_S = 1.0


@contextlib.contextmanager
def _quiet_cancelled_runners() -> Iterator[None]:
    """While a session closes, a queue-runner thread cancelled by the close is the normal
    end of SyncReplicasOptimizer's chief, not an error worth a traceback."""
    import tensorflow as tf

    previous = threading.excepthook

    def hook(args: Any) -> None:
        if issubclass(args.exc_type, tf.errors.CancelledError):
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        time.sleep(0.2)  # let cancelled runner threads report before restoring the hook
        threading.excepthook = previous
