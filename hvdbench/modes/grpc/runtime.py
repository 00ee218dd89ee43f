"""The running gRPC cluster: servers, the ps task's life, and the control plane.

TensorFlow's gRPC server has no ``stop()`` and a ps waiting in ``server.join()`` never
returns, which is how tf_cnn_benchmarks leaves its ps tasks behind. Here a ps task instead
waits on a **control queue** that lives on itself (a ``FIFOQueue`` of strings with a
``shared_name``, so that the chief's graph reaches the same queue):

* the chief sends ``alive`` every few seconds while it runs, and ``stop`` when it is done;
* a ps that hears nothing for ``ps.idle_timeout_s`` (``launch.startup_timeout_s`` before
  the first word) concludes the chief is gone;
* either way the ps leaves by exiting its process (after ``MPI_Finalize`` when it was
  started under MPI), since the server cannot be stopped.

The workers' measurements reach the chief through a queue of JSON strings on ps 0, so
the same code works whether the tasks were spawned by hvdbench, started by mpirun or
written into the config by hand.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from hvdbench.components import startup
from hvdbench.config import Config
from hvdbench.errors import ClusterError, UsageError
from hvdbench.launch import netinfo
from hvdbench.launch.job import JobLayout, Role
from hvdbench.launch.topology import Topology
from hvdbench.modes.grpc import cluster
from hvdbench.modes.grpc.cluster import TaskView

v1 = tf.compat.v1

CONTROL_CAPACITY = 1000
GATHER_CAPACITY = 10000
ALIVE = b"alive"
STOP = b"stop"
STOP_GRACE_S = 1.0


@dataclass(frozen=True)
class Membership:
    """Where this process is: what it knows of the cluster, its role, and whether MPI
    started it."""

    spec: TaskView
    role: Role
    under_mpi: bool


def resolve(cfg: Config, topo: Topology, layout: JobLayout, whole: bool = False) -> Membership:
    """The cluster and this process's role: explicit, or from the launcher's ranks.

    From ranks, each task gets its :func:`cluster.task_view <hvdbench.modes.grpc.cluster.task_view>`
    (gathered to rank 0 and scattered: O(num_ps) for a worker other than the chief), or,
    with ``whole`` (``collective_all_reduce``, whose TF_CONFIG lists every worker), every
    address (an all-gather: O(ranks) per task). An explicit cluster (host lists, TF_CONFIG,
    ``hvdbench run``'s own launch) is known whole without an exchange."""
    if cfg.cluster.job_name:
        return Membership(
            TaskView.whole(cluster.explicit_spec(cfg)),
            Role(cfg.cluster.job_name, cfg.cluster.task_index),
            False,
        )
    if not topo.launched:
        raise UsageError(
            f"mode {cfg.mode.name} needs a cluster: run `hvdbench run` without a launcher (it "
            "starts every task itself), under mpirun/srun, or give cluster.job_name and the "
            "host lists"
        )
    if topo.source == "horovod":
        raise UsageError(
            f"mode {cfg.mode.name}: roles from ranks need MPI (mpirun or srun --mpi=pmix), "
            "not horovodrun; set --launch.launcher=mpirun"
        )
    role = layout.role(topo.rank)
    base = cfg.cluster.base_port
    port = cluster.free_ports(1, base + topo.rank if base else 0)[0]
    host = cfg.cluster.advertise_address or netinfo.advertise_host(os.environ, topo)
    startup.phase(
        "waiting for every rank in mpi4py's start-up (MPI_Init and the address exchange)",
        waiting=True,
    )
    mpi_size = cluster.mpi_world_size()
    if mpi_size != topo.size:
        raise ClusterError(
            f"mpi4py saw {mpi_size} rank(s), the launcher {topo.size}: is mpi4py built "
            "against the MPI that launched this job?"
        )
    address = f"{host}:{port}"
    if whole:
        addresses = cluster.exchange_addresses(address)
        view = TaskView.whole(cluster.spec_from_ranks(addresses, layout.num_ps))
    else:
        view = cluster.scatter_addresses(address, layout.num_ps)
    return Membership(view, role, True)


def session_config(role: Role, intra: int, inter: int) -> Any:
    """A session that sees only the ps tasks and this task, so that no task waits for
    the others to come up (or to stay up), and a worker needs no other worker's address
    (:func:`cluster.server_cluster <hvdbench.modes.grpc.cluster.server_cluster>`)."""
    filters = ["/job:ps", f"/job:{role.job}/task:{role.index}"]
    return v1.ConfigProto(
        device_filters=filters,
        intra_op_parallelism_threads=intra,
        inter_op_parallelism_threads=inter,
        allow_soft_placement=False,
    )


GRPC_OPTIONS_ENV = "TF_GRPC_DEFAULT_OPTIONS"
BDP_PROBE = "grpc.http2.bdp_probe"


def channel_options(existing: str | None, bdp_probe: bool) -> str | None:
    """The ``TF_GRPC_DEFAULT_OPTIONS`` (TensorFlow's extra gRPC channel arguments,
    comma-separated ``key=value``) for ``ps.grpc_bdp_probe``: with the probe off,
    ``grpc.http2.bdp_probe=0`` is added, unless the user's value already names it."""
    if bdp_probe or (existing and BDP_PROBE in existing):
        return existing
    return f"{existing},{BDP_PROBE}=0" if existing else f"{BDP_PROBE}=0"


def apply_channel_options(cfg: Config, env: Any = os.environ) -> str | None:
    """Set ``TF_GRPC_DEFAULT_OPTIONS`` for this process's gRPC channels (created after
    its server starts) and return the value in effect."""
    value = channel_options(env.get(GRPC_OPTIONS_ENV), cfg.ps.grpc_bdp_probe)
    if value is not None:
        env[GRPC_OPTIONS_ENV] = value
    return value


def start_server(m: Membership, config: Any) -> Any:
    """Start this task's gRPC server on its sparse cluster (a worker: the ps tasks and
    itself), after checking that its port is free."""
    address = m.spec.address(m.role)
    cluster.check_port_free(address, f"{m.role.job} task {m.role.index}")
    return tf.distribute.Server(
        tf.train.ClusterSpec(cluster.server_cluster(m.spec, m.role)),
        job_name=m.role.job,
        task_index=m.role.index,
        protocol="grpc",
        config=config,
        start=True,
    )


def wait_for_tasks(addresses: list[str], timeout_s: float, what: str) -> None:
    """Bounded retry until every address accepts a TCP connection, so that workers may
    start before their ps tasks."""
    deadline = time.monotonic() + timeout_s
    for address in addresses:
        host, _, port = address.rpartition(":")
        while True:
            try:
                with socket.create_connection((host, int(port)), timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"{what} at {address} not reachable after {timeout_s:g} s "
                        "(launch.startup_timeout_s)"
                    ) from None
                time.sleep(0.2)


def ps_device(index: int) -> str:
    return f"/job:ps/task:{index}"


def control_queue(index: int) -> Any:
    with tf.device(ps_device(index)):
        return tf.queue.FIFOQueue(
            CONTROL_CAPACITY,
            [tf.string],
            shapes=[[]],
            shared_name=f"hvdbench_control_{index}",
            name=f"hvdbench_control_{index}",
        )


def exit_process(code: int, under_mpi: bool) -> None:
    """Leave now: TensorFlow's server threads cannot be stopped, so the process ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    if under_mpi and code == 0:
        from mpi4py import MPI

        if MPI.Is_initialized() and not MPI.Is_finalized():
            MPI.Finalize()
    os._exit(code)


def serve_ps(m: Membership, cfg: Config, server: Any, intra: int, inter: int) -> None:
    """A ps task's whole life after its server started; never returns."""
    graph = tf.Graph()
    with graph.as_default():
        receive = control_queue(m.role.index).dequeue()
    config = v1.ConfigProto(
        device_filters=[ps_device(m.role.index)],
        intra_op_parallelism_threads=intra,
        inter_op_parallelism_threads=inter,
    )
    name = f"ps task {m.role.index}"
    code = 0
    startup.done()  # serving: its own waits are bounded below
    with v1.Session(server.target, graph=graph, config=config) as sess:
        timeout, key = cfg.launch.startup_timeout_s, "launch.startup_timeout_s"
        while True:
            options = v1.RunOptions(timeout_in_ms=int(timeout * 1000))
            try:
                word = sess.run(receive, options=options)
            except tf.errors.DeadlineExceededError:
                print(
                    f"hvdbench: {name}: no word from the chief in {timeout:g} s ({key}); exiting",
                    file=sys.stderr,
                    flush=True,
                )
                code = 1
                break
            if word == STOP:
                # Let the chief close its sessions while this task can still answer
                # their clean-up calls, then leave.
                time.sleep(STOP_GRACE_S)
                break
            timeout, key = cfg.ps.idle_timeout_s, "ps.idle_timeout_s"
    exit_process(code, m.under_mpi)


class ControlPlane:
    """The chief's and workers' side of the control queues and the gather/any queues.

    Built into the worker's graph before it is finalised; run through its own plain
    session, beside the training session.
    """

    def __init__(self, num_ps: int, num_workers: int) -> None:
        self.num_ps = num_ps
        self.num_workers = num_workers
        self._msg = v1.placeholder(tf.string, [], name="hvdbench_control_msg")
        self._send = [control_queue(i).enqueue(self._msg) for i in range(num_ps)]
        with tf.device(ps_device(0)):
            gather_q = tf.queue.FIFOQueue(
                GATHER_CAPACITY, [tf.string], shapes=[[]], shared_name="hvdbench_gather"
            )
            self._gather_put = gather_q.enqueue(self._msg)
            self._gather_take = gather_q.dequeue()
            ready_q = tf.queue.FIFOQueue(
                CONTROL_CAPACITY, [tf.string], shapes=[[]], shared_name="hvdbench_ready"
            )
            self._ready_n = v1.placeholder(tf.int32, [])
            self._ready_put = ready_q.enqueue_many(tf.fill([self._ready_n], ALIVE))
            self._ready_take = ready_q.dequeue()
            any_up = tf.queue.FIFOQueue(
                CONTROL_CAPACITY, [tf.int32], shapes=[[]], shared_name="hvdbench_any_up"
            )
            any_down = tf.queue.FIFOQueue(
                CONTROL_CAPACITY, [tf.int32], shapes=[[]], shared_name="hvdbench_any_down"
            )
            self._flag = v1.placeholder(tf.int32, [])
            self._any_put = any_up.enqueue(self._flag)
            self._any_take_all = any_up.dequeue_many(num_workers)
            self._any_reply = any_down.enqueue_many(tf.fill([num_workers - 1], self._flag))
            self._any_take = any_down.dequeue()
            # backup workers: the chief's barrier counts the live workers one by one
            self._any_take_one = any_up.dequeue()
            self._any_n = v1.placeholder(tf.int32, [])
            self._any_reply_n = any_down.enqueue_many(tf.fill([self._any_n], self._flag))
            # backup workers: the workers that finished their steps or were lost, as a
            # set (a worker may finish and then die), so that the drain counts each once
            finished = tf.raw_ops.MutableHashTableV2(
                key_dtype=tf.int32, value_dtype=tf.int32, shared_name="hvdbench_finished"
            )
            self._worker = v1.placeholder(tf.int32, [])
            self._finish = tf.raw_ops.LookupTableInsertV2(
                table_handle=finished, keys=tf.reshape(self._worker, [1]), values=[1]
            )
            self._finished_count = tf.raw_ops.LookupTableSizeV2(table_handle=finished)
            done_q = tf.queue.FIFOQueue(
                CONTROL_CAPACITY, [tf.int32], shapes=[[]], shared_name="hvdbench_done"
            )
            self._done_put = done_q.enqueue(1)
            self._done_count = done_q.size()
            stop_q = tf.queue.FIFOQueue(
                CONTROL_CAPACITY, [tf.int32], shapes=[[]], shared_name="hvdbench_stop"
            )
            self._stop_put = stop_q.enqueue(1)
            self._stop_count = stop_q.size()
        self._stop_raised = False
        self.sess: Any = None
        self._heartbeat: threading.Thread | None = None
        self._stop_beating = threading.Event()

    def open(self, target: str, config: Any, graph: Any) -> None:
        self._session_args = (target, graph, config)
        self._reopen_lock = threading.Lock()
        self.sess = v1.Session(target, graph=graph, config=config)

    def _run(self, fetch: Any, feed: dict[Any, Any] | None = None, timeout_s: float = 0) -> Any:
        """Run on the control session. A ps task that was restarted no longer knows this
        session's graph: the call is retried on a new session, within ``timeout_s`` (60 s
        when unbounded), as MonitoredTrainingSession does for the training session."""
        options = v1.RunOptions(timeout_in_ms=int(timeout_s * 1000)) if timeout_s else None
        deadline = time.monotonic() + (timeout_s or 60.0)
        while True:
            sess = self.sess
            try:
                return sess.run(fetch, feed_dict=feed, options=options)
            except (tf.errors.UnavailableError, tf.errors.AbortedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                self._reopen(sess)

    def _reopen(self, failed: Any) -> None:
        with self._reopen_lock:
            if self.sess is failed:  # not already replaced by another thread
                target, graph, config = self._session_args
                # the failed session is left to the garbage collector: another thread
                # may still be returning from a call on it
                self.sess = v1.Session(target, graph=graph, config=config)

    # chief -> ps
    def tell_ps(self, word: bytes) -> None:
        for op in self._send:
            self._run(op, {self._msg: word}, timeout_s=30)

    def start_heartbeat(self, every_s: float) -> None:
        def beat() -> None:
            while not self._stop_beating.wait(every_s):
                try:
                    self.tell_ps(ALIVE)
                except tf.errors.OpError:
                    # a ps task is down: keep beating, so that a restarted one hears
                    # from the chief (it leaves after launch.startup_timeout_s otherwise)
                    continue

        self.tell_ps(ALIVE)
        self._heartbeat = threading.Thread(target=beat, name="hvdbench-heartbeat", daemon=True)
        self._heartbeat.start()

    def stop_ps(self) -> None:
        self._stop_beating.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=60)
        self.tell_ps(STOP)

    # chief -> workers: the variables are initialised
    def announce_ready(self) -> None:
        if self.num_workers > 1:
            self._run(self._ready_put, {self._ready_n: self.num_workers - 1}, timeout_s=30)

    def wait_ready(self, timeout_s: float) -> None:
        try:
            self._run(self._ready_take, timeout_s=timeout_s)
        except tf.errors.DeadlineExceededError:
            raise ClusterError(
                f"the chief did not initialise the variables within {timeout_s:g} s "
                "(launch.startup_timeout_s)"
            ) from None

    # workers -> chief
    def put(self, obj: Any) -> None:
        self._run(self._gather_put, {self._msg: json.dumps(obj, default=str)}, timeout_s=60)

    def take(self, n: int, timeout_s: float) -> list[Any]:
        return [json.loads(self._run(self._gather_take, timeout_s=timeout_s)) for _ in range(n)]

    def take_one(self, timeout_s: float) -> Any | None:
        """One gathered item, or None when none came within ``timeout_s``."""
        try:
            return json.loads(self._run(self._gather_take, timeout_s=timeout_s))
        except tf.errors.DeadlineExceededError:
            return None

    def any_live(
        self, flag: bool, is_chief: bool, live: Callable[[], int], timeout_s: float
    ) -> bool:
        """:meth:`any_rank` among the workers still alive (``live()``, which may drop
        while the chief waits): the chief takes the flags one at a time, so that a worker
        lost meanwhile is not waited for."""
        self._run(self._any_put, {self._flag: int(flag)}, timeout_s=timeout_s)
        if not is_chief:
            return bool(self._run(self._any_take, timeout_s=timeout_s))
        deadline = time.monotonic() + timeout_s
        flags: list[int] = []
        while len(flags) < live():
            try:
                flags.append(int(self._run(self._any_take_one, timeout_s=1.0)))
            except tf.errors.DeadlineExceededError:
                if time.monotonic() > deadline:
                    raise
        result = max(flags)
        if live() > 1:
            self._run(self._any_reply_n, {self._flag: result, self._any_n: live() - 1}, 30)
        return bool(result)

    # backup workers: a worker finished its steps, or the chief left it out as lost
    def finished(self, index: int) -> int:
        """Count worker ``index`` out of the drain; return how many are counted out."""
        self._run(self._finish, {self._worker: index}, timeout_s=30)
        return self.finished_count()

    def finished_count(self) -> int:
        return int(self._run(self._finished_count, timeout_s=60))

    def any_rank(self, flag: bool, is_chief: bool, timeout_s: float) -> bool:
        self._run(self._any_put, {self._flag: int(flag)}, timeout_s=timeout_s)
        if is_chief:
            result = int(max(self._run(self._any_take_all, timeout_s=timeout_s)))
            if self.num_workers > 1:
                self._run(self._any_reply, {self._flag: result}, timeout_s=timeout_s)
            return bool(result)
        return bool(self._run(self._any_take, timeout_s=timeout_s))

    # end of the measured steps
    def mark_done(self) -> int:
        self._run(self._done_put, timeout_s=60)
        return int(self._run(self._done_count, timeout_s=60))

    def done_count(self) -> int:
        return int(self._run(self._done_count, timeout_s=60))

    # a stop signal: raised by any worker, seen by all, waited on by none
    def stop_flag(self, mine: bool) -> bool:
        if mine and not self._stop_raised:
            self._run(self._stop_put, timeout_s=60)
            self._stop_raised = True
        return mine or int(self._run(self._stop_count, timeout_s=60)) > 0

    def close(self) -> None:
        if self.sess is not None:
            self.sess.close()
            self.sess = None
