"""What each mode supports, declared once, as data: validation, ``hvdbench modes`` and the
README's matrix all read these declarations.

Every mode class carries a :class:`Capabilities` (``Mode.capabilities``). Before anything
starts, :func:`check` holds the config against the declaration of its ``mode.name``: a
setting the mode does not support is refused with one line naming the key, the mode and
what that mode does support, so that nothing is accepted and then ignored. No TensorFlow
here: this runs while the command line is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hvdbench.config import DATA_SOURCES, Config
from hvdbench.errors import UsageError

ALL_PRECISIONS = ("none", "float16", "bfloat16")


@dataclass(frozen=True)
class Capabilities:
    """The settings a mode supports; a docstring on each says which config key it gates."""

    devices: str
    """What one compute rank is: ``one per process`` or ``mode.num_devices in one process``."""
    input_sharding: str
    """Who reads which shard of a real data set's split: ``per worker`` or ``per device``."""
    cluster_roles: bool
    """Takes an explicit gRPC cluster (cluster.job_name, cluster.*_hosts)."""
    many_processes: bool
    """Runs several processes (launch.np > 1); else one process over local devices."""
    data_sources: tuple[str, ...] = DATA_SOURCES
    """data.source values it reads (each through the same reader as every mode)."""
    precisions: tuple[str, ...] = ALL_PRECISIONS
    """train.mixed_precision values."""
    jit_compile: bool = True
    """train.jit_compile=true: the forward and backward pass compiled by XLA."""
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


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


# The matrix's rows: a label and how to show the declaration's value.
ROWS: tuple[tuple[str, Callable[[Capabilities], str]], ...] = (
    ("devices", lambda c: c.devices),
    ("processes (launch.np)", lambda c: "many" if c.many_processes else "one"),
    ("cluster roles (cluster.*)", lambda c: _yes_no(c.cluster_roles)),
    ("input sharding", lambda c: c.input_sharding),
    ("data.source", lambda c: ", ".join(c.data_sources)),
    ("train.mixed_precision", lambda c: ", ".join(c.precisions)),
    ("train.jit_compile", lambda c: _yes_no(c.jit_compile)),
    ("ps.staged_vars", lambda c: _yes_no(c.staged_vars)),
    ("data.compare_synthetic", lambda c: _yes_no(c.compare_synthetic)),
    ("checkpoint.dir", lambda c: _yes_no(c.checkpoints)),
    ("stop.checkpoint", lambda c: _yes_no(c.stop_checkpoint)),
    ("hvdbench eval", lambda c: _yes_no(c.eval)),
    ("summary.dir", lambda c: _yes_no(c.summaries)),
    ("trace.steps", lambda c: _yes_no(c.traces)),
)


def _refuse(key: str, value: object, mode: str, supported: str) -> UsageError:
    return UsageError(f"{key}: {value} is not supported by mode {mode}; it supports {supported}")


def _supported_modes(
    declared: Mapping[str, Capabilities], ok: Callable[[Capabilities], bool]
) -> str:
    names = [m for m, c in declared.items() if ok(c)]
    return ", ".join(names) if names else "none"


def check(cfg: Config, declared: Mapping[str, Capabilities]) -> None:
    """Refuse any setting of ``cfg`` that the declaration of its mode does not support."""
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
    if not caps.many_processes and cfg.launch.np > 1:
        raise UsageError(
            f"launch.np: mode {mode} runs in one process on mode.num_devices("
            f"{cfg.mode.num_devices}) devices; got launch.np({cfg.launch.np}), use 0 or 1"
        )


def matrix(declared: Mapping[str, Capabilities]) -> str:
    """The capability matrix as a Markdown table: a column per mode, a row per setting."""
    names = list(declared)
    lines = [
        "| | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, show in ROWS:
        lines.append(f"| {label} | " + " | ".join(show(declared[n]) for n in names) + " |")
    return "\n".join(lines) + "\n"
