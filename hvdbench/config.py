"""The one configuration object of a run.

A run is described by nested, frozen dataclasses, one section per concern. Every field
documents itself through ``fld(help=...)`` and carries its own bounds. Values come from
three layers, later layers winning:

    hvdbench/configs/default.toml  <  the user's TOML file  <  ``--section.key=value``

The embedded ``default.toml`` sets every key, so the schema below has no defaults of its
own and there is a single place where defaults live. ``load()`` merges the layers, coerces
command-line strings to each field's type, validates everything once and returns a frozen
:class:`Config` that is passed down whole.

This module must not import TensorFlow: a bad config has to fail in well under a second.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from hvdbench import tfcompat, tfconfig
from hvdbench.errors import UsageError
from hvdbench.hostlist import parse_host_list
from hvdbench.models.specs import MODEL_SPECS

SCHEMA_VERSION = 1


def fld(
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
) -> Any:
    """A config field: its documentation and bounds, checked by :func:`validate`."""
    return field(
        metadata={
            "help": help,
            "choices": tuple(choices) if choices is not None else None,
            "min": min,
            "max": max,
            "min_exclusive": min_exclusive,
        }
    )


# The choices of the keys that take one of a few strings, as Literal types: mypy and
# `hvdbench config keys` both see them, and the tuples below (what validation checks) are
# read from them. Model and mode names are known without importing TensorFlow; the
# registries check they agree.
ModelName = Literal[
    "trivial",
    "mnist_mlp",
    "cifar10_cnn",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet50",
    "resnet101",
    "resnet152",
    "inception3",
    "vgg16",
    "xception",
    "mobilenet",
]
ModeName = Literal[
    "horovod",
    "parameter_server",
    "distributed_replicated",
    "collective_all_reduce",
    "replicated",
    "independent",
]
DataSource = Literal["synthetic", "cifar10", "mnist", "imagenet"]
OptimizerName = Literal["sgd", "momentum", "rmsprop", "adam"]
Precision = Literal["none", "float16", "bfloat16"]
DataFormat = Literal["channels_last", "channels_first"]
JobName = Literal["", "ps", "worker"]
LauncherName = Literal["auto", "horovodrun", "mpirun"]
HorovodController = Literal["gloo", "mpi"]
SrunController = Literal["mpi", "gloo"]
CpuAllocator = Literal["bfc", "malloc"]

MODEL_NAMES: tuple[ModelName, ...] = typing.get_args(ModelName)
MODE_NAMES: tuple[ModeName, ...] = typing.get_args(ModeName)
# Modes whose processes form a TensorFlow gRPC cluster (ps and/or worker tasks).
GRPC_MODES = ("parameter_server", "distributed_replicated", "collective_all_reduce")
# Modes that need parameter-server tasks on top of the workers.
PS_MODES = ("parameter_server", "distributed_replicated")
# Modes that run in one process on several local devices.
LOCAL_DEVICE_MODES = ("replicated", "independent")
DATA_SOURCES: tuple[DataSource, ...] = typing.get_args(DataSource)
OPTIMIZERS: tuple[OptimizerName, ...] = typing.get_args(OptimizerName)


@dataclass(frozen=True)
class ModelConfig:
    """What network is trained, and on what input shape."""

    name: ModelName = fld("Network to train (`hvdbench models` lists them).", choices=MODEL_NAMES)
    image_size: int = fld(
        "Input height and width in pixels. 0 takes the model's own size "
        "(28 for MNIST, 32 for CIFAR, 224 or 299 for ImageNet networks).",
        min=0,
    )
    data_format: DataFormat = fld(
        "Tensor layout. channels_first (NCHW) is for GPUs only: TensorFlow's CPU kernels "
        "are NHWC-only.",
        choices=typing.get_args(DataFormat),
    )
    num_classes: int = fld("Output classes. 0 takes the model's own count.", min=0)


@dataclass(frozen=True)
class DataConfig:
    """Where training examples come from."""

    source: DataSource = fld(
        "Input data. synthetic: random tensors generated once on the device and reused, "
        "so that the benchmark measures training, not input.",
        choices=DATA_SOURCES,
    )
    dir: str = fld(
        "Directory of the real data set (unused for synthetic data): CIFAR-10 binary "
        "batches, MNIST IDX files, or ImageNet TFRecords (train-*/validation-*)."
    )
    parallel_calls: int = fld(
        "Parallel calls of the parsing and distortion map and of file interleaving. "
        "0: tf.data.AUTOTUNE.",
        min=0,
    )
    prefetch_batches: int = fld(
        "Batches prefetched ahead of the step (to the GPU when there is one). 0: tf.data.AUTOTUNE.",
        min=0,
    )
    shuffle_buffer: int = fld(
        "Examples in the training shuffle buffer (per rank). 0 disables shuffling.", min=0
    )
    distortions: bool = fld(
        "Training distortions: random crop and flip (plus brightness and contrast for "
        "CIFAR-10, as in the TensorFlow tutorial). Evaluation never distorts."
    )
    compare_synthetic: bool = fld(
        "With real data, also time num_steps steps on a synthetic batch (run before the "
        "real measured steps; they train on random data) and record whether the input "
        "pipeline is the bottleneck."
    )


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation problem and the length of the measurement."""

    per_device_batch_size: int = fld(
        "Examples per device (rank) per step. The global batch is this times the number "
        "of compute ranks; keeping it fixed is what makes weak-scaling points comparable.",
        min=1,
    )
    optimizer: OptimizerName = fld(
        "Optimizer: sgd (plain), momentum (SGD with train.momentum), rmsprop (train.rho, "
        "train.momentum, train.epsilon) or adam (train.beta_1, train.beta_2, train.epsilon).",
        choices=OPTIMIZERS,
    )
    learning_rate: float = fld("Learning rate.", min=0.0, min_exclusive=True)
    momentum: float = fld(
        "Momentum of the momentum and rmsprop optimizers (Keras and tf.compat.v1 defaults "
        "differ, so it is always explicit).",
        min=0.0,
        max=1.0,
    )
    rho: float = fld("Decay of rmsprop's moving average of squared gradients.", min=0.0, max=1.0)
    beta_1: float = fld("Adam's first-moment decay.", min=0.0, max=1.0)
    beta_2: float = fld("Adam's second-moment decay.", min=0.0, max=1.0)
    epsilon: float = fld("Epsilon of rmsprop and adam.", min=0.0, min_exclusive=True)
    weight_decay: float = fld(
        "L2 penalty added to the loss, weight_decay * sum(w^2)/2 over the kernels "
        "(biases and batch-norm parameters are left out), identically in every mode.",
        min=0.0,
    )
    gradient_clip_norm: float = fld(
        "Clip the averaged gradients to this global norm. 0 disables clipping.", min=0.0
    )
    mixed_precision: Precision = fld(
        "Keras mixed-precision policy: none (float32), float16 (with loss scaling) or bfloat16.",
        choices=typing.get_args(Precision),
    )
    loss_scale: float = fld(
        "Loss scale for float16. 0 selects dynamic loss scaling; a positive value is fixed.",
        min=0.0,
    )
    jit_compile: bool = fld("Compile the forward and backward pass with XLA.")
    num_warmup_steps: int = fld("Steps run before timing starts (not measured).", min=0)
    num_steps: int = fld("Measured (timed) steps after the warm-up.", min=1)
    display_every: int = fld("Print a progress line every this many measured steps.", min=1)
    seed: int = fld("Random seed of the weights and the synthetic data (offset by rank).", min=0)


@dataclass(frozen=True)
class ModeConfig:
    """How the work is distributed."""

    name: ModeName = fld(
        "Distribution mode. horovod: replicated model, gradients averaged by Horovod's ring "
        "all-reduce. parameter_server: between-graph replication, variables on ps tasks "
        "(see [ps]). distributed_replicated: each worker keeps a local copy, gradients "
        "aggregated on the ps. collective_all_reduce: TensorFlow's MultiWorkerMirrored"
        "Strategy over gRPC. replicated / independent: one process on mode.num_devices "
        "local devices, gradients all-reduced / not exchanged at all.",
        choices=MODE_NAMES,
    )
    num_devices: int = fld(
        "Devices of the in-process modes (replicated, independent). On a CPU-only machine "
        "the CPU is split into this many logical devices.",
        min=1,
    )


@dataclass(frozen=True)
class PsConfig:
    """The parameter-server modes (parameter_server, distributed_replicated)."""

    num_ps: int = fld(
        "Parameter-server tasks. They come on top of the workers: the job has "
        "num_ps + launch.np processes. Variables are balanced across them by byte size.",
        min=1,
    )
    sync: bool = fld(
        "Synchronous training: each global step applies the aggregated gradients of "
        "replicas_to_aggregate workers once (SyncReplicasOptimizer). false: every worker "
        "applies its own gradients as soon as it has them (asynchronous)."
    )
    replicas_to_aggregate: int = fld(
        "Gradients aggregated per synchronous step. 0: all workers. Fewer than the workers "
        "makes the rest backup workers whose late gradients are dropped.",
        min=0,
    )
    staged_vars: bool = fld(
        "parameter_server only: read the variables through a staging buffer filled one "
        "step ahead, so that fetching from the ps overlaps compute. Gradients are then "
        "computed on variables one step stale (see docs/parameter_server.md)."
    )
    pack_transfers: bool = fld(
        "One gRPC transfer per ps task and step for each kind of tensor a worker exchanges "
        "with it (flattened and concatenated), instead of one per tensor: the gradients, "
        "the values (read at the start of the step, or one step ahead when staged), batch "
        "norm's moving-average updates, and the synchronous optimizer's local step; sync, "
        "each ps task's gradients are also accumulated whole (one accumulator per task, "
        "not per variable). Same values; resnet20 on 2 ps tasks crosses 9-12 times a step "
        "instead of 240-330 (docs/parameter_server.md)."
    )
    grpc_bdp_probe: bool = fld(
        "gRPC's bandwidth-delay-product probing, which resizes each connection's flow-"
        "control window while it runs (gRPC's default: true). false: TF_GRPC_DEFAULT_OPTIONS "
        "gains grpc.http2.bdp_probe=0 unless it names it already. Measured on loopback, "
        "false removed the ~125 ms stalls of a packed synchronous parameter_server step "
        "(3-7 in 60 steps -> 0) but its throughput gain was inside the noise, and the "
        "other ps modes were 2-8% slower (docs/parameter_server.md)."
    )
    idle_timeout_s: float = fld(
        "A ps task exits when it has heard nothing from the chief (heartbeat or stop "
        "signal) for this long, so that a ps never outlives a chief that died.",
        min=0.0,
        min_exclusive=True,
    )
    debug_slow_worker: int = fld(
        "Testing aid: this worker index sleeps debug_slow_seconds before every step, to "
        "exercise backup workers. -1: none.",
        min=-1,
    )
    debug_slow_seconds: float = fld("Testing aid: see debug_slow_worker.", min=0.0)


@dataclass(frozen=True)
class ClusterConfig:
    """Where the tasks of a gRPC cluster are. Empty host lists: hvdbench finds them itself
    (loopback ports when it spawns the tasks, mpi4py exchange under mpirun/srun)."""

    ps_hosts: str = fld(
        "Comma-separated host:port of the ps tasks, e.g. 'node1:2222,node2:2222'. Its "
        "length must equal ps.num_ps."
    )
    worker_hosts: str = fld(
        "Comma-separated host:port of the worker tasks; its length is the number of workers."
    )
    job_name: JobName = fld(
        "This process's job in an explicit cluster: ps or worker. Empty: from the launcher "
        "ranks (the first ps.num_ps ranks are ps tasks), or hvdbench spawns every task.",
        choices=typing.get_args(JobName),
    )
    task_index: int = fld("This process's index within its job.", min=0)
    advertise_address: str = fld(
        "Address other tasks use to reach this one under mpirun/srun. Empty: this host's "
        "name. TensorFlow's gRPC servers listen on all interfaces regardless."
    )
    base_port: int = fld(
        "First port tried when ports are chosen by hvdbench (local spawn and mpirun). "
        "0: ports the kernel reports free.",
        min=0,
        max=65535,
    )


@dataclass(frozen=True)
class HorovodConfig:
    """Horovod's knobs, applied through its environment variables before hvd.init()."""

    fp16_allreduce: bool = fld("Compress gradients to float16 for the all-reduce.")
    fusion_threshold_mib: float = fld(
        "Tensor fusion buffer in MiB (HOROVOD_FUSION_THRESHOLD); 0 disables fusion.", min=0.0
    )
    cycle_time_ms: float = fld(
        "Milliseconds between Horovod's background cycles (HOROVOD_CYCLE_TIME).",
        min=0.0,
        min_exclusive=True,
    )
    hierarchical_allreduce: bool = fld(
        "Hierarchical all-reduce (HOROVOD_HIERARCHICAL_ALLREDUCE). Horovod 0.28.1 honours "
        "it only when built with NCCL; otherwise it is recorded as off, with a warning."
    )
    timeline: str = fld("Write Horovod's timeline to this JSON file (HOROVOD_TIMELINE).")
    autotune: bool = fld("Let Horovod autotune fusion and cycle time (HOROVOD_AUTOTUNE).")
    autotune_log: str = fld("CSV log of the autotuner's trials (HOROVOD_AUTOTUNE_LOG).")
    num_groups: int = fld(
        "Gradient groups per step: 0 gives each gradient its own all-reduce as soon as it is "
        "ready (fused by the background cycle); 1 sends all gradients as one grouped "
        "all-reduce once the backward pass ends; N splits them into N groups.",
        min=0,
    )


@dataclass(frozen=True)
class LaunchConfig:
    """How hvdbench starts ranks when it is not already inside a launcher."""

    np: int = fld(
        "Compute ranks (workers); parameter-server tasks come on top. 0 takes the world "
        "size of the launcher that started hvdbench (1 when started alone). Started alone "
        "with np > 1, hvdbench launches np ranks itself through `launcher`; inside a "
        "launcher, a nonzero np must match the world size.",
        min=0,
    )
    launcher: LauncherName = fld(
        "Launcher hvdbench uses to start ranks itself. auto: mpirun for Horovod mode "
        "(Horovod's MPI controller, Open MPI yielding while idle: on CPU nodes it came within "
        "a few percent of the communication-free limit, where horovodrun --gloo lost 25-45%; "
        "docs/PERFORMANCE.md), and hvdbench's own supervising launcher for the gRPC modes "
        "(which restarts a lost ps task). mpirun runs the gRPC modes with roles from ranks.",
        choices=typing.get_args(LauncherName),
    )
    horovodrun_controller: HorovodController = fld(
        "Horovod controller when hvdbench starts the ranks through horovodrun: gloo or mpi "
        "(under srun it is launch.srun_controller, under mpirun always MPI).",
        choices=typing.get_args(HorovodController),
    )
    hosts: str = fld("Hosts and slots, e.g. 'node1:4,node2:4'. Empty: localhost with np slots.")
    network_interface: str = fld(
        "Network interface for Horovod and MPI traffic, e.g. eth0. Empty: let them choose."
    )
    srun_controller: SrunController = fld(
        "Horovod controller for ranks started by srun: mpi (the cluster's PMI wires them up) "
        "or gloo (hvdbench runs Horovod's Gloo rendezvous itself: rank 0 serves it, and "
        "each rank takes HOROVOD_GLOO_IFACE from its route to rank 0's node).",
        choices=typing.get_args(SrunController),
    )
    rendezvous_port: int = fld(
        "Port of the Gloo rendezvous server under srun (on rank 0's node). 0: derived from "
        "the job and step ids, so that every rank knows it without asking.",
        min=0,
        max=65535,
    )
    startup_timeout_s: float = fld(
        "Bound on every wait before the first training step: a rendezvous server to "
        "appear, peers and gRPC servers to come up, sessions to open, the start-up "
        "exchange, the watchdog's connections, and Horovod's Gloo store "
        "(HOROVOD_GLOO_TIMEOUT_SECONDS, unless set). Each rank also gives up when its own "
        "start-up (TensorFlow's import included) has not reached the first step within "
        "it, naming the phase it is in. Generous by default: importing TensorFlow from a "
        "shared file system on hundreds of nodes at once takes minutes. Silence during the "
        "run is bounded by fault.heartbeat_timeout_s instead.",
        min=0.0,
        min_exclusive=True,
    )
    debug_startup_delay_rank: int = fld(
        "Testing aid: the process of this launcher rank (mpirun, srun, horovodrun; every "
        "task hvdbench spawns itself counts as rank 0) sleeps debug_startup_delay_s at the "
        "start of its start-up, before TensorFlow is imported (a slow import). -1: none.",
        min=-1,
    )
    debug_startup_delay_s: float = fld("Testing aid: see debug_startup_delay_rank.", min=0.0)


@dataclass(frozen=True)
class RuntimeConfig:
    """How each rank uses the cores and devices of its node."""

    bind_cores: bool = fld(
        "Bind each rank to its share of the node's cores when nobody else did, so that "
        "ranks on one node do not fight over cores. A binding the launcher made (srun "
        "--cpu-bind/--cpus-per-task, mpirun --bind-to: a mask smaller than the cgroup's "
        "CPUs) stands, and the thread pools follow it. hvdbench slices by physical core, "
        "within one NUMA node where the counts allow, and uses hardware threads apart only "
        "with more ranks than cores; the record says which happened (binding: launcher | "
        "hvdbench | none). In the gRPC modes the workers on a node split its cores and a ps "
        "task is left unbound, over all of them."
    )
    intra_op_threads: int = fld(
        "TensorFlow intra-op threads per rank. 0: the cores available to this rank.", min=0
    )
    inter_op_threads: int = fld(
        "TensorFlow inter-op threads per rank. 0: TensorFlow's choice for that many cores.",
        min=0,
    )
    mpi_yield_when_idle: bool = fld(
        "Open MPI waits by yielding the core instead of spinning "
        "(OMPI_MCA_mpi_yield_when_idle=1, unless already set). A rank's TensorFlow threads "
        "and Horovod's background thread share its cores, so a spinning wait steals their "
        "compute; see docs/PERFORMANCE.md."
    )
    cpu_allocator: CpuAllocator = fld(
        "TensorFlow's allocator for host memory. 'bfc': TensorFlow's pooling BFC allocator "
        "(TF_CPU_ALLOCATOR_USE_BFC=1, unless already set), which keeps and reuses the step's "
        "large buffers. 'malloc': TensorFlow's default, glibc malloc, which maps buffers "
        "above its mmap threshold afresh and unmaps them on free, so that every step "
        "page-faults them in again: 20-30% of a rank's CPU in the kernel on one 2-core "
        "machine class, and it varies from rank to rank; see docs/PERFORMANCE.md.",
        choices=typing.get_args(CpuAllocator),
    )


@dataclass(frozen=True)
class FaultConfig:
    """Detection of lost and stalled ranks: an out-of-band watchdog beside the collectives."""

    watchdog: bool = fld(
        "Run the watchdog: each rank sends heartbeats to the chief over its own TCP "
        "connection, so a dead or stopped rank is named and the job aborted instead of hanging."
    )
    heartbeat_interval_s: float = fld("Seconds between heartbeats.", min=0.0, min_exclusive=True)
    heartbeat_timeout_s: float = fld(
        "A rank not heard from for this long is declared lost and the job is aborted.",
        min=0.0,
        min_exclusive=True,
    )
    step_deadline_s: float = fld(
        "A measured step running longer than this aborts the job, naming the ranks behind. "
        "0 disables the deadline.",
        min=0.0,
    )
    ps_max_restarts: int = fld(
        "Parameter-server modes started by `hvdbench run` alone: a ps task that dies while "
        "the workers run is restarted on its port this many times at most; the workers "
        "recover their sessions and the chief reloads the latest checkpoint. 0: a lost ps "
        "task ends the job.",
        min=0,
    )
    tolerate_lost_workers: bool = fld(
        "Parameter-server modes, sync with backup workers (ps.replicas_to_aggregate below "
        "the number of workers), launched by `hvdbench run` alone: a non-chief worker that "
        "dies is named and left out, and training goes on with the others as long as at "
        "least replicas_to_aggregate remain (fewer end the job, naming it). Needs "
        "fault.watchdog. false, or in any other situation: a lost worker ends the job."
    )


@dataclass(frozen=True)
class OutputConfig:
    """Where results go."""

    dir: str = fld(
        "Directory of the JSON result records. The chief writes one new, uniquely named "
        "file per run, atomically."
    )


@dataclass(frozen=True)
class CheckpointConfig:
    """Periodic object-based checkpoints (tf.train.Checkpoint), written by the chief only."""

    dir: str = fld(
        "Checkpoint directory. Empty: no checkpoints. A run whose directory already holds "
        "checkpoints resumes from the latest readable one and its global step."
    )
    every_steps: int = fld("Save every this many global steps. 0: not by steps.", min=0)
    every_seconds: float = fld("Save every this many seconds. 0: not by time.", min=0.0)
    max_to_keep: int = fld(
        "Checkpoints kept; older ones are deleted. At least 2, so that a corrupt latest "
        "checkpoint can fall back to the previous one.",
        min=2,
    )


@dataclass(frozen=True)
class SummaryConfig:
    """TensorBoard event files, written by the chief only."""

    dir: str = fld("TensorBoard log directory. Empty: no summaries.")
    every_steps: int = fld("Write summaries every this many global steps.", min=1)
    verbosity: int = fld(
        "1: loss, learning rate, images/sec. 2: also weight and gradient histograms.",
        min=1,
        max=2,
    )


@dataclass(frozen=True)
class TraceConfig:
    """A profile of a few steps that TensorBoard's profiler opens."""

    steps: str = fld(
        "First and last step of this run to profile, e.g. '10,12' (steps count from 1, "
        "warm-up included). Empty: no profile. In horovod mode Horovod's timeline is "
        "written for the same steps; in the gRPC modes every worker also writes "
        "timeline-worker<i>-step<n>.json (the session's trace of the step across tasks)."
    )
    dir: str = fld(
        "Log directory of the profile (plugins/profile/...) and of Horovod's timeline "
        "(horovod_timeline.json). Empty: summary.dir, else output.dir/trace."
    )


@dataclass(frozen=True)
class EvalConfig:
    """`hvdbench eval`: accuracy of the latest checkpoint on the evaluation split."""

    num_batches: int = fld(
        "Batches of train.per_device_batch_size to evaluate. 0: the whole split once "
        "(the last partial batch included).",
        min=0,
    )


@dataclass(frozen=True)
class StopConfig:
    """Stopping early on a signal (Slurm's --signal warning before the time limit)."""

    check_every: int = fld(
        "Measured or warm-up steps between the ranks' agreements on stopping. On SIGTERM or "
        "SIGUSR1 each rank sets a flag; every this many steps the ranks combine their flags "
        "in a collective, so they all stop after the same step, the chief writes the record "
        "marked incomplete, and hvdbench exits with 128 + the signal number. The time spent "
        "in these agreements is left out of the measured time.",
        min=1,
    )
    checkpoint: bool = fld(
        "On a stop signal the chief also saves a checkpoint of the steps done: into "
        "checkpoint.dir, or, when that is empty, into a directory beside the record (its "
        "name with .ckpt for .json, given in the record's stop.checkpoint), which a rerun "
        "resumes from with --checkpoint.dir=<it>. Modes without checkpoint support record "
        "why none was written."
    )


@dataclass(frozen=True)
class Config:
    """A whole run. Built by :func:`load`, frozen, and passed down whole."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    mode: ModeConfig
    horovod: HorovodConfig
    ps: PsConfig
    cluster: ClusterConfig
    launch: LaunchConfig
    runtime: RuntimeConfig
    fault: FaultConfig
    output: OutputConfig
    checkpoint: CheckpointConfig
    summary: SummaryConfig
    trace: TraceConfig
    eval: EvalConfig
    stop: StopConfig

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The config as plain TOML-able data, section by section."""
        return dataclasses.asdict(self)


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))
_SECTION_CLASSES: dict[str, type] = typing.get_type_hints(Config)
_HINTS: dict[str, dict[str, Any]] = {}


def _section_class(name: str) -> type:
    return _SECTION_CLASSES[name]


def section_fields(section: str) -> dict[str, dataclasses.Field[Any]]:
    """The fields of one config section, by name."""
    return {f.name: f for f in dataclasses.fields(_section_class(section))}


def field_hint(section: str, key: str) -> Any:
    """The annotation of ``section.key``: a Python type, or a ``Literal`` of its choices."""
    if section not in _HINTS:
        _HINTS[section] = typing.get_type_hints(_section_class(section))
    return _HINTS[section][key]


def field_type(section: str, key: str) -> Any:
    """The Python type of ``section.key`` (``str`` for a ``Literal`` of strings)."""
    hint = field_hint(section, key)
    if typing.get_origin(hint) is Literal:
        return type(typing.get_args(hint)[0])
    return hint


def all_keys() -> list[str]:
    """Every dotted key of the schema, in declaration order."""
    return [f"{s}.{k}" for s in SECTIONS for k in section_fields(s)]


# ---------------------------------------------------------------------------------------
# Loading


def _type_name(tp: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


# Keys that were renamed or replaced: an old key names its successor instead of failing
# with a guess.
RENAMED_KEYS: dict[str, str] = {
    "ps.start_timeout_s": "launch.startup_timeout_s",
    "launch.controller": "launch.horovodrun_controller",
    "horovod.fusion_threshold_mb": "horovod.fusion_threshold_mib",
}


def _check_key(section: str, key: str | None = None) -> None:
    if key is not None and f"{section}.{key}" in RENAMED_KEYS:
        raise UsageError(
            f"config key '{section}.{key}' was replaced by "
            f"'{RENAMED_KEYS[f'{section}.{key}']}'; set that instead"
        )
    if section not in SECTIONS:
        hint = difflib.get_close_matches(section, SECTIONS, n=1)
        raise UsageError(
            f"unknown config section '{section}'"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f"; valid sections: {', '.join(SECTIONS)}"
        )
    if key is not None and key not in section_fields(section):
        keys = list(section_fields(section))
        hint = difflib.get_close_matches(key, keys, n=1)
        raise UsageError(
            f"unknown config key '{section}.{key}'"
            + (f" (did you mean '{section}.{hint[0]}'?)" if hint else "")
            + f"; valid keys in [{section}]: {', '.join(keys)}"
        )


def _from_toml_value(section: str, key: str, value: Any) -> Any:
    """Check a value read from TOML against the field's type."""
    tp = field_type(section, key)
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise UsageError(
            f"{section}.{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce(section: str, key: str, text: str) -> Any:
    """Convert a command-line string to the type of ``section.key``."""
    _check_key(section, key)
    tp = field_type(section, key)
    try:
        if tp is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
    except ValueError:
        allowed = " (true/false)" if tp is bool else ""
        raise UsageError(
            f"{section}.{key}: expected {_type_name(tp)}{allowed}, got {text!r}"
        ) from None
    return text


def parse_override(arg: str) -> tuple[str, str, str]:
    """Split ``--section.key=value`` into its parts."""
    body = arg[2:] if arg.startswith("--") else arg
    if "=" not in body:
        raise UsageError(f"override '{arg}' needs a value: --section.key=value")
    dotted, text = body.split("=", 1)
    if dotted.count(".") != 1:
        raise UsageError(
            f"override '{arg}' must name one key as section.key, e.g. --train.num_steps=20"
        )
    section, key = dotted.split(".")
    _check_key(section, key)
    return section, key, text


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--section.key[=value]`` overrides from the other arguments.

    ``--section.key value`` is accepted too, and normalised to ``--section.key=value``.
    """
    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." in name:
            if "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                arg = f"{arg}={argv[i + 1]}"
                i += 1
            overrides.append(arg)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def read_toml(path: str) -> dict[str, Any]:
    """Read a config file, with a one-line error when it is missing or malformed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file '{path}' does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"config file '{path}' is a directory") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file '{path}' is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"config file '{path}' is not UTF-8 text") from None


def default_toml() -> dict[str, Any]:
    """The embedded defaults, ``hvdbench/configs/default.toml``."""
    text = resources.files("hvdbench.configs").joinpath("default.toml").read_text()
    return tomllib.loads(text)


def _merge_layer(base: dict[str, dict[str, Any]], layer: Mapping[str, Any], origin: str) -> None:
    for section, values in layer.items():
        _check_key(section)
        if not isinstance(values, Mapping):
            raise UsageError(f"'{section}' in {origin} must be a table [{section}]")
        for key, value in values.items():
            _check_key(section, key)
            base.setdefault(section, {})[key] = _from_toml_value(section, key, value)


def load(path: str | None = None, overrides: Iterable[str] = ()) -> Config:
    """Build the validated, frozen config from defaults, an optional file and overrides.

    In the gRPC modes a ``TF_CONFIG`` in the environment (TFJob, Vertex AI, SageMaker)
    is the cluster: see :mod:`hvdbench.tfconfig`."""
    values, given = _merged(path, overrides)
    if values["mode"]["name"] in GRPC_MODES:
        external = tfconfig.from_env(os.environ)
        if external is not None:
            flat = {f"{s}.{k}": v for s, keys in given.items() for k, v in keys.items()}
            tfconfig.apply(values, flat, external, values["mode"]["name"] in PS_MODES)
    return build(values)


@functools.cache
def _defaults() -> dict[str, dict[str, Any]]:
    values: dict[str, dict[str, Any]] = {}
    _merge_layer(values, default_toml(), "default.toml")
    return values


def _merged(
    path: str | None, overrides: Iterable[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(every key's value, the keys the file and overrides gave), unvalidated."""
    values = {section: dict(keys) for section, keys in _defaults().items()}
    given: dict[str, dict[str, Any]] = {}
    if path:
        _merge_layer(given, read_toml(path), path)
    for arg in overrides:
        section, key, text = parse_override(arg)
        given.setdefault(section, {})[key] = coerce(section, key, text)
    for section, keys in given.items():
        values[section].update(keys)
    return values, given


def merged_values(path: str | None, overrides: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every key's value from the defaults, the file and the overrides, unvalidated."""
    return _merged(path, overrides)[0]


def build(values: Mapping[str, Mapping[str, Any]]) -> Config:
    """Construct and validate a config from complete section dictionaries."""
    sections = {}
    for section in SECTIONS:
        given = dict(values.get(section, {}))
        missing = [k for k in section_fields(section) if k not in given]
        if missing:
            raise UsageError(f"config key '{section}.{missing[0]}' has no value")
        sections[section] = _section_class(section)(**given)
    cfg = Config(**sections)
    validate(cfg)
    return cfg


def replace(cfg: Config, **changes: Any) -> Config:
    """A copy of ``cfg`` with dotted keys changed: ``replace(cfg, **{"launch.np": 2})``."""
    values = cfg.to_dict()
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        _check_key(section, key)
        values[section][key] = value
    return build(values)


# ---------------------------------------------------------------------------------------
# Validation


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def _check_field(section: str, f: dataclasses.Field[Any], value: Any) -> None:
    meta = f.metadata
    name = f"{section}.{f.name}"
    if meta.get("choices") and value not in meta["choices"]:
        raise UsageError(
            f"{name}: {_fmt(value)} is not one of: {', '.join(map(str, meta['choices']))}"
        )
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None:
        if meta.get("min_exclusive") and not value > lo:
            raise UsageError(f"{name}: must be > {lo}, got {value}")
        if value < lo:
            raise UsageError(f"{name}: must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise UsageError(f"{name}: must be <= {hi}, got {value}")


def validate(cfg: Config) -> None:
    """Check every field's bounds and the relations between fields; raise UsageError."""
    for section in SECTIONS:
        sec = getattr(cfg, section)
        for f in dataclasses.fields(sec):
            _check_field(section, f, getattr(sec, f.name))
    spec = MODEL_SPECS[cfg.model.name]
    size = cfg.model.image_size or spec.image_size
    if size < spec.min_image_size:
        raise UsageError(
            f"model.image_size: {cfg.model.name} needs at least {spec.min_image_size}x"
            f"{spec.min_image_size} pixels, got {size}"
        )
    if cfg.fault.heartbeat_timeout_s < 2 * cfg.fault.heartbeat_interval_s:
        raise UsageError(
            f"fault.heartbeat_timeout_s({cfg.fault.heartbeat_timeout_s:g}) must be at least twice "
            f"fault.heartbeat_interval_s({cfg.fault.heartbeat_interval_s:g})"
        )
    check_capabilities(cfg)
    if MODE_CAPABILITIES[cfg.mode.name].cluster_roles:
        _validate_cluster(cfg)
    trace_steps(cfg.trace.steps)
    if cfg.summary.dir:
        tfcompat.require_tensorboard("summary.dir")
    if cfg.data.source != "synthetic" and not cfg.data.dir:
        raise UsageError(
            f"data.dir: data.source={cfg.data.source!r} needs the directory of its files; "
            "set --data.dir=DIR (or --data.source=synthetic)"
        )
    if cfg.launch.hosts:
        slots = sum(n for _, n in parse_hosts(cfg.launch.hosts))
        if cfg.launch.np and slots < cfg.launch.np:
            raise UsageError(
                f"launch.hosts: {slots} slots in '{cfg.launch.hosts}' < launch.np({cfg.launch.np})"
            )


def needs_ps(mode: str) -> bool:
    return mode in PS_MODES


# ---------------------------------------------------------------------------------------
# What each mode supports


ALL_PRECISIONS: tuple[str, ...] = typing.get_args(Precision)


@dataclass(frozen=True)
class Capabilities:
    """The settings a mode supports; a docstring on each says which config key it gates."""

    devices: str
    """What one compute rank is: ``one per process`` or ``mode.num_devices in one process``."""
    input_sharding: str
    """Who reads which shard of a real data set's split: ``per worker`` or ``per device``."""
    cluster_roles: bool
    """Takes an explicit gRPC cluster (cluster.job_name, cluster.*_hosts) and reads
    [cluster]."""
    many_processes: bool
    """Runs several processes (launch.np > 1); else one process over local devices."""
    data_sources: tuple[str, ...] = DATA_SOURCES
    """data.source values it reads (each through the same reader as every mode)."""
    precisions: tuple[str, ...] = ALL_PRECISIONS
    """train.mixed_precision values."""
    jit_compile: bool = True
    """train.jit_compile=true: the forward and backward pass compiled by XLA."""
    ps_tasks: bool = False
    """Has parameter-server tasks and reads [ps]."""
    horovod_knobs: bool = False
    """Reads [horovod] (Horovod's knobs)."""
    staged_vars: bool = False
    """ps.staged_vars=true."""
    compare_synthetic: bool = True
    """data.compare_synthetic=true: the same run also timed on a synthetic batch."""
    checkpoints: bool = True
    """checkpoint.dir: periodic and final checkpoints, restored at start-up."""
    stop_checkpoint: bool = True
    """stop.checkpoint: a checkpoint saved on a stop signal."""
    eval: bool = True
    """`hvdbench eval` reads its checkpoints (the model under ``model``)."""
    summaries: bool = True
    """summary.dir: TensorBoard scalars and histograms."""
    traces: bool = True
    """trace.steps: a profile of the steps given."""


# What each mode supports, declared once, as data (like models.specs.MODEL_SPECS for the
# models): validation holds every config to its mode's declaration before anything starts,
# each mode class carries its own (Mode.capabilities), and `hvdbench modes` and the
# README's matrix print them (hvdbench.modes.capabilities).
_ONE_PER_PROCESS = dict(devices="one per process", input_sharding="per worker", many_processes=True)
# The ps modes' tf.compat.v1 graphs run in float32 without XLA: SyncReplicasOptimizer and
# the v1 optimizers have no loss scaling, and a graph session does not compile with XLA here.
_GRAPH = dict(
    **_ONE_PER_PROCESS, cluster_roles=True, ps_tasks=True, precisions=("none",), jit_compile=False
)
_LOCAL = Capabilities(
    devices="mode.num_devices in one process",
    input_sharding="per device",
    cluster_roles=False,
    many_processes=False,
)
MODE_CAPABILITIES: dict[str, Capabilities] = {
    "horovod": Capabilities(**_ONE_PER_PROCESS, cluster_roles=False, horovod_knobs=True),  # type: ignore[arg-type]
    "parameter_server": Capabilities(**_GRAPH, staged_vars=True),  # type: ignore[arg-type]
    "distributed_replicated": Capabilities(**_GRAPH),  # type: ignore[arg-type]
    "collective_all_reduce": Capabilities(**_ONE_PER_PROCESS, cluster_roles=True),  # type: ignore[arg-type]
    "replicated": _LOCAL,
    "independent": _LOCAL,
}
assert tuple(MODE_CAPABILITIES) == MODE_NAMES
assert {m for m, c in MODE_CAPABILITIES.items() if c.ps_tasks} == set(PS_MODES)

# Config that only some modes read (a section, or one key), and which declarations read
# it. Set away from its default in a mode that does not read it, it is refused rather
# than ignored.
MODE_SPECIFIC: tuple[tuple[str, Callable[[Capabilities], bool]], ...] = (
    ("mode.num_devices", lambda c: not c.many_processes),
    ("horovod", lambda c: c.horovod_knobs),
    ("ps", lambda c: c.ps_tasks),
    ("cluster", lambda c: c.cluster_roles),
)


def unread_settings(
    values: Mapping[str, Mapping[str, Any]], declared: Mapping[str, Capabilities] | None = None
) -> list[tuple[str, Any, Any, Callable[[Capabilities], bool]]]:
    """The mode-specific settings in ``values`` (sections as dictionaries) that its mode
    does not read, where they differ from the defaults: (dotted key, value, default, which
    declarations read it)."""
    caps = (MODE_CAPABILITIES if declared is None else declared)[values["mode"]["name"]]
    out = []
    for scope, reads in MODE_SPECIFIC:
        if reads(caps):
            continue
        section, _, only = scope.partition(".")
        for key, value in values[section].items():
            default = _defaults()[section][key]
            if (not only or key == only) and value != default:
                out.append((f"{section}.{key}", value, default, reads))
    return out


def _refuse(key: str, value: object, mode: str, supported: str) -> UsageError:
    return UsageError(f"{key}: {value} is not supported by mode {mode}; it supports {supported}")


def _supported_modes(
    declared: Mapping[str, Capabilities], ok: Callable[[Capabilities], bool]
) -> str:
    names = [m for m, c in declared.items() if ok(c)]
    return ", ".join(names) if names else "none"


def check_capabilities(cfg: Config, declared: Mapping[str, Capabilities] | None = None) -> None:
    """Refuse any setting of ``cfg`` that the declaration of its mode does not support."""
    declared = MODE_CAPABILITIES if declared is None else declared
    mode = cfg.mode.name
    caps = declared[mode]
    if cfg.data.source not in caps.data_sources:
        raise _refuse("data.source", repr(cfg.data.source), mode, ", ".join(caps.data_sources))
    if cfg.train.mixed_precision not in caps.precisions:
        raise _refuse(
            "train.mixed_precision",
            repr(cfg.train.mixed_precision),
            mode,
            ", ".join(caps.precisions),
        )
    flags: tuple[tuple[str, bool, Callable[[Capabilities], bool]], ...] = (
        ("train.jit_compile", cfg.train.jit_compile, lambda c: c.jit_compile),
        ("ps.staged_vars", cfg.ps.staged_vars, lambda c: c.staged_vars),
        (
            "data.compare_synthetic",
            cfg.data.compare_synthetic and cfg.data.source != "synthetic",
            lambda c: c.compare_synthetic,
        ),
        ("stop.checkpoint", cfg.stop.checkpoint, lambda c: c.stop_checkpoint),
    )
    for key, asked, supports in flags:
        if asked and not supports(caps):
            others = _supported_modes(declared, supports)
            raise _refuse(key, "true", mode, f"only false (true in: {others})")
    settings = (
        ("checkpoint.dir", cfg.checkpoint.dir, caps.checkpoints),
        ("summary.dir", cfg.summary.dir, caps.summaries),
        ("trace.steps", cfg.trace.steps, caps.traces),
    )
    for key, value, supported in settings:
        if value and not supported:
            raise _refuse(key, repr(value), mode, "none (leave it empty)")
    cl = cfg.cluster
    if not caps.cluster_roles and (cl.job_name or cl.ps_hosts or cl.worker_hosts):
        key = "cluster.job_name" if cl.job_name else "cluster"
        others = _supported_modes(declared, lambda c: c.cluster_roles)
        raise UsageError(
            f"{key}: mode {mode} takes no cluster role or host lists; the modes that do: {others}"
        )
    for key, value, default, reads in unread_settings(cfg.to_dict(), declared):
        others = _supported_modes(declared, reads)
        raise UsageError(
            f"{key}: {_toml_value(value)} is not read by mode {mode} (only by {others}); "
            f"leave it at {_toml_value(default)}"
        )
    if not caps.many_processes and cfg.launch.np > 1:
        raise UsageError(
            f"launch.np: mode {mode} runs in one process on mode.num_devices("
            f"{cfg.mode.num_devices}) devices; got launch.np({cfg.launch.np}), use 0 or 1"
        )


def _validate_cluster(cfg: Config) -> None:
    """The cross-key checks of a mode that takes cluster roles (the gRPC modes): host
    lists, ps tasks and workers add up; raise UsageError. What each mode supports at all
    is checked before, against its declaration (:data:`MODE_CAPABILITIES`)."""
    mode, ps, cl, np = cfg.mode.name, cfg.ps, cfg.cluster, cfg.launch.np
    ps_hosts = parse_host_list(cl.ps_hosts, "cluster.ps_hosts")
    worker_hosts = parse_host_list(cl.worker_hosts, "cluster.worker_hosts")
    check_distinct_tasks(ps_hosts, worker_hosts)
    if not needs_ps(mode):
        if ps_hosts or cl.job_name == "ps":
            raise UsageError(f"cluster: mode {mode} has no ps tasks; leave cluster.ps_hosts empty")
    elif ps_hosts and len(ps_hosts) != ps.num_ps:
        raise UsageError(f"cluster.ps_hosts: {len(ps_hosts)} host(s) != ps.num_ps({ps.num_ps})")
    if worker_hosts and np and len(worker_hosts) != np:
        raise UsageError(f"cluster.worker_hosts: {len(worker_hosts)} host(s) != launch.np({np})")
    workers = len(worker_hosts) or np
    if needs_ps(mode) and ps.sync and workers and ps.replicas_to_aggregate > workers:
        raise UsageError(
            f"ps.replicas_to_aggregate({ps.replicas_to_aggregate}) > workers({workers}); "
            f"use 0 (all workers) to {workers}"
        )
    if ps.debug_slow_worker >= 0 and workers and ps.debug_slow_worker >= workers:
        raise UsageError(
            f"ps.debug_slow_worker({ps.debug_slow_worker}) >= workers({workers}); use -1 or "
            f"0 to {workers - 1}"
        )
    if cl.job_name:
        if not worker_hosts or (needs_ps(mode) and not ps_hosts):
            need = (
                "cluster.ps_hosts and cluster.worker_hosts"
                if needs_ps(mode)
                else ("cluster.worker_hosts")
            )
            raise UsageError(f"cluster.job_name={cl.job_name!r} needs {need}")
        count = len(ps_hosts) if cl.job_name == "ps" else len(worker_hosts)
        if cl.task_index >= count:
            raise UsageError(f"cluster.task_index({cl.task_index}) >= {cl.job_name} tasks({count})")
    elif ps_hosts or worker_hosts:
        raise UsageError(
            "cluster.job_name: set ps or worker with explicit host lists, or leave the host "
            "lists empty for hvdbench to find them"
        )


def parse_hosts(hosts: str) -> list[tuple[str, int]]:
    """Parse ``'node1:4,node2:4'`` (a host without slots counts 1)."""
    parsed: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, slots = item.partition(":")
        if not name or (slots and not slots.isdigit()) or slots == "0":
            raise UsageError(
                f"launch.hosts: cannot read {item!r}; expected host[:slots], e.g. 'node1:4,node2:4'"
            )
        parsed.append((name, int(slots or 1)))
    if not parsed:
        raise UsageError("launch.hosts: no hosts given; expected e.g. 'node1:4,node2:4'")
    return parsed


def check_distinct_tasks(ps_hosts: list[str], worker_hosts: list[str]) -> None:
    """Every task needs its own host:port: two tasks on one address cannot both serve."""
    seen: dict[str, str] = {}
    for job, hosts in (("ps", ps_hosts), ("worker", worker_hosts)):
        for i, h in enumerate(hosts):
            task = f"{job} task {i}"
            first = seen.setdefault(h.lower(), task)
            if first != task:
                raise UsageError(
                    f"cluster.{job}_hosts: {h} is given to {first} and to {task}; every task "
                    "needs its own host:port"
                )


def trace_steps(text: str) -> tuple[int, int] | None:
    """``trace.steps`` as (first, last), or None when empty; UsageError when malformed."""
    if not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        first, last = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        first = last = 0
    if first < 1 or last < first:
        raise UsageError(
            f"trace.steps: {text!r} is not 'FIRST,LAST' with 1 <= FIRST <= LAST, e.g. '10,12'"
        )
    return first, last


# ---------------------------------------------------------------------------------------
# Printing


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML that :func:`load` reads back to the same config."""
    lines: list[str] = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    return "\n".join(lines)


def describe() -> str:
    """Every key with its type, default and documentation, for `hvdbench config keys`."""
    defaults = default_toml()
    out: list[str] = []
    for section in SECTIONS:
        cls = _section_class(section)
        out.append(f"[{section}]  {(cls.__doc__ or '').strip()}")
        for name, f in section_fields(section).items():
            tp = field_type(section, name).__name__
            choices = f.metadata["choices"]
            if choices:
                tp += ": " + " | ".join(_toml_value(c) for c in choices)
            default = _toml_value(defaults[section][name])
            out.append(f"  {section}.{name} ({tp}, default {default})")
            out.append(f"      {f.metadata['help']}")
        out.append("")
    return "\n".join(out)
