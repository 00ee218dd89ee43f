"""Whether XLA compiled the step: evidence from the XLA compiler itself, not the request.

``train.jit_compile`` wraps each device's forward and backward pass in a ``tf.function``
with ``jit_compile=True``, named :data:`PASS_NAME` (:func:`hvdbench.components.training.xla_pass`).
That attribute (``_XlaMustCompile`` in the graph) is only the request. The evidence is
XLA's own: before the first step, this process's ``XLA_FLAGS`` gain ``--xla_dump_to`` a
fresh directory, and the XLA compiler writes a ``module_NNNN.<name>...`` file there for
every HLO module it compiles, named after the TensorFlow function it was lowered from
(``a_inference_hvdbench_xla_pass_127__``). A must-compile function is compiled where it
is first called and then run as that executable (TensorFlow has no fallback to its own
kernels for it), so a module of :data:`PASS_NAME` that appears during the first step,
which then completes, is the step having run compiled by XLA in this process.

The dump holds the HLO before and after optimisation and the CPU backend's LLVM IR (tens
of kB for ``mnist_mlp``, a few MB for the large models); it is removed when the process
exits. Where ``XLA_FLAGS`` already names a dump directory, that one is used, and only the
modules that appear during the run count.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

PASS_NAME = "hvdbench_xla_pass"
_DUMP_FLAG = "--xla_dump_to="
# module_0000.a_inference_hvdbench_xla_pass_127__.127.before_optimizations.txt
_MODULE = re.compile(r"module_(\d+)\.([^.]+)\.(?:\d+\.)?before_optimizations\.")


def compiled_modules(names: list[str]) -> list[str]:
    """The HLO modules in a dump directory's file names, in compilation order."""
    found = {}
    for n in names:
        m = _MODULE.match(n)
        if m:
            found[int(m.group(1))] = m.group(2)
    return [found[k] for k in sorted(found)]


def pass_modules(modules: list[str], name: str = PASS_NAME) -> list[str]:
    """The modules lowered from the function ``name`` (TensorFlow names a function's
    instantiation ``__inference_<name>_<id>``, and XLA's module ``a_inference_<name>_<id>__``)."""
    pattern = re.compile(rf"a_inference_{re.escape(name)}_\d+__")
    return [m for m in modules if pattern.match(m)]


class NotCompiledError(RuntimeError):
    """train.jit_compile asked for XLA and the step ran without it: the run stops rather
    than record numbers of another computation than the config says."""


@dataclass
class Verdict:
    """What the record's ``xla`` entry says for one process."""

    requested: bool
    compiled: bool
    evidence: str
    modules: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "compiled": self.compiled,
            "evidence": self.evidence,
            "modules": list(self.modules),
        }


class Probe:
    """This process's XLA dump, set up before TensorFlow first compiles with XLA."""

    def __init__(
        self, requested: bool, directory: str | None, before: set[str], owned: bool = False
    ) -> None:
        self.requested = requested
        self.directory = directory
        self._before = before
        self._owned = owned  # a directory of hvdbench's, removed by close()
        self.verdict: Verdict | None = None

    @classmethod
    def start(cls, requested: bool, env: MutableMapping[str, str]) -> Probe:
        """Point XLA's dump at a directory (``env`` is this process's environment: XLA
        reads ``XLA_FLAGS`` when it first compiles). Nothing is changed unless requested."""
        if not requested:
            return cls(False, None, set())
        flags = env.get("XLA_FLAGS", "")
        given = [f[len(_DUMP_FLAG) :] for f in shlex.split(flags) if f.startswith(_DUMP_FLAG)]
        if given:  # the user's own dump: count only what appears from now on
            directory = given[-1]
            before = set(os.listdir(directory)) if os.path.isdir(directory) else set()
            return cls(True, directory, before)
        directory = tempfile.mkdtemp(prefix="hvdbench-xla-")
        atexit.register(shutil.rmtree, directory, True)  # and close(): ranks may os._exit
        env["XLA_FLAGS"] = f"{flags} {_DUMP_FLAG}{directory}".strip()
        return cls(True, directory, set(), owned=True)

    def close(self) -> None:
        """Remove hvdbench's dump directory (never the user's); the verdict stays."""
        if self._owned and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._owned = False

    def modules(self) -> list[str]:
        """The HLO modules XLA compiled in this process since :meth:`start`."""
        if self.directory is None or not os.path.isdir(self.directory):
            return []
        return compiled_modules(sorted(set(os.listdir(self.directory)) - self._before))

    def check(self, first_step_seconds: float | None = None) -> Verdict:
        """The verdict after the first step (kept in :attr:`verdict`)."""
        self.verdict = judge(self.requested, self.modules(), first_step_seconds)
        return self.verdict

    def final(self) -> Verdict:
        """The verdict at the end of the run: the first step's, with every module compiled
        by then (a retrace on another input signature compiles again)."""
        if self.verdict is None:  # no step ran
            return judge(self.requested, self.modules(), None, stepped=False)
        if self.requested:
            self.verdict.modules = pass_modules(self.modules())
        return self.verdict


def judge(
    requested: bool, modules: list[str], seconds: float | None, stepped: bool = True
) -> Verdict:
    """Whether the step ran compiled, from the modules XLA compiled during it."""
    if not requested:
        return Verdict(False, False, "train.jit_compile=false: the step is not compiled by XLA")
    ours = pass_modules(modules)
    if not stepped:
        return Verdict(True, False, "no step ran", ours)
    if ours:
        took = f" (the first step took {seconds:.2f} s)" if seconds is not None else ""
        return Verdict(
            True,
            True,
            f"XLA compiled {len(ours)} HLO module(s) of {PASS_NAME} during the first step, "
            f"which then ran{took}: {', '.join(ours)}",
            ours,
        )
    others = f"; it compiled only {', '.join(modules)}" if modules else ""
    return Verdict(
        True,
        False,
        f"XLA compiled no module of {PASS_NAME} during the first step (its dump names "
        f"every module it compiles){others}",
        ours,
    )


def summary(per_rank: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The record's ``xla`` entry from every rank's verdict (chief first): compiled only
    where every rank's step was."""
    verdicts = [v for v in per_rank if v]
    if not verdicts:
        return {"requested": False, "compiled": False, "evidence": "no verdict", "ranks": []}
    chief = verdicts[0]
    return {
        "requested": chief["requested"],
        "compiled": all(v["compiled"] for v in verdicts),
        "evidence": chief["evidence"],
        "ranks_compiled": sum(1 for v in verdicts if v["compiled"]),
        "ranks": len(verdicts),
        "modules": chief.get("modules", []),
    }


def banner_text(requested: bool) -> str:
    """The banner's word on XLA before any step: the compiler's verdict comes after the first."""
    return "XLA requested (checked at the first step)" if requested else "XLA off"


def verdict_line(verdict: Verdict) -> str:
    return f"XLA:         {'compiled' if verdict.compiled else 'NOT compiled'}: {verdict.evidence}"
