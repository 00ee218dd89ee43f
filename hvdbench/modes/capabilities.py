"""What each mode supports, shown: ``hvdbench modes`` and the README's matrix.

The declarations themselves are data in the config's layer
(:data:`hvdbench.config.MODE_CAPABILITIES`, like the model catalogue in
``models/specs.py``), so that validation holds every config to its mode's declaration
before anything starts, without importing the modes; each mode class carries its own
(``Mode.capabilities``). No TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hvdbench.config import MODE_CAPABILITIES, Capabilities

__all__ = ["MODE_CAPABILITIES", "Capabilities", "ROWS", "matrix"]


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


# The matrix's rows: a label and how to show the declaration's value.
ROWS: tuple[tuple[str, Callable[[Capabilities], str]], ...] = (
    ("devices", lambda c: c.devices),
    ("processes (launch.np)", lambda c: "many" if c.many_processes else "one"),
    ("cluster roles (cluster.*)", lambda c: _yes_no(c.cluster_roles)),
    ("ps tasks (ps.*)", lambda c: _yes_no(c.ps_tasks)),
    ("Horovod's knobs (horovod.*)", lambda c: _yes_no(c.horovod_knobs)),
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
