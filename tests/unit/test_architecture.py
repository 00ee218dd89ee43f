"""The layout is checked, not only drawn: hvdbench's imports form no cycle and run one way.

The package's sources are parsed with ``ast`` (nothing is imported, no TensorFlow). Every
import counts, at the top of a module, inside a function or under ``TYPE_CHECKING``: a
function-local import delays a heavy import, it does not make a dependency go away.

Layers, top to bottom; a module may import its own layer or one below, never one above::

    cli, __main__        parse, validate, hand over
    run, study           one rank's benchmark loop; sweeps, reports, predictions
    modes                the registry, horovod, tf_distribute, grpc/
    components, data,    metrics, record, checkpoint, training, runtime, stopping,
    models, testbed      watchdog; input pipelines; model builders; test clusters
    launch               topology, the job's layout, argv builders, netinfo, buildcheck
    config               the schema, TOML + overrides, validation; the model catalogue
    errors               the user-facing error types
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hvdbench"

# (layer, module prefixes), top first. The longest matching prefix decides a module's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("hvdbench.cli", "hvdbench.__main__")),
    ("run/study", ("hvdbench.run", "hvdbench.study")),
    ("modes", ("hvdbench.modes",)),
    (
        "components/data/models/testbed",
        ("hvdbench.components", "hvdbench.data", "hvdbench.models", "hvdbench.testbed"),
    ),
    ("launch", ("hvdbench.launch",)),
    # models.specs is the model catalogue, pure data that the config validates against
    # tfconfig reads a TF_CONFIG from outside while the config loads: the config's layer
    (
        "config",
        (
            "hvdbench.config",
            "hvdbench.configs",
            "hvdbench.models.specs",
            "hvdbench.tfconfig",
            "hvdbench.hostlist",
        ),
    ),
    # tfcompat is imported by the package itself (Keras 2 before any TensorFlow import)
    ("errors", ("hvdbench.errors", "hvdbench.tfcompat", "hvdbench")),
]


# Third-party imports worth delaying: a function-local import of an hvdbench module is
# there to keep one of these off the start-up path (a bad config must fail in well under a
# second), never to hide a cycle.
HEAVY = ("tensorflow", "horovod", "mpi4py", "matplotlib", "numpy", "keras")
# The command line imports what a subcommand needs when it runs that subcommand, so that a
# bad key or `hvdbench config keys` does not load the run loop, the modes or the studies.
COMMAND_LINE = ("hvdbench.cli", "hvdbench.study.commands")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module
    line: int
    local: bool  # inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


class _Visitor(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, known: set[str]) -> None:
        self.name, self.is_package, self.known = name, is_package, known
        self.depth = 0
        self.found: list[tuple[str, int, bool]] = []  # (target, line, local)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            here = self.name.split(".") if self.is_package else self.name.split(".")[:-1]
            here = here[: len(here) - node.level + 1]
            base = ".".join([*here, base] if base else here)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self.found.append((sub if sub in self.known else base, node.lineno, self.depth > 0))


def imports() -> Iterator[Import]:
    mods = modules()
    known = set(mods)
    for name, path in mods.items():
        v = _Visitor(name, path.name == "__init__.py", known)
        v.visit(ast.parse(path.read_text(), str(path)))
        for target, line, local in v.found:
            yield Import(name, target, line, local)


def internal() -> list[Import]:
    return [i for i in imports() if i.target == "hvdbench" or i.target.startswith("hvdbench.")]


def layer(module: str) -> int:
    best, index = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    assert index >= 0, f"{module} is in no layer; add it to LAYERS"
    return index


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in modules()}
    for i in internal():
        g[i.source].add(i.target)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a self-import
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in g.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer() -> None:
    for m in modules():
        layer(m)


def test_imports_form_no_cycle() -> None:
    assert cycles(graph()) == []


def test_imports_run_one_way() -> None:
    upward = [
        f"{i.source}:{i.line} imports {i.target} ({LAYERS[layer(i.source)][0]} -> "
        f"{LAYERS[layer(i.target)][0]})"
        for i in internal()
        if layer(i.target) < layer(i.source)
    ]
    assert upward == []


def test_function_local_imports_only_delay_heavy_imports() -> None:
    """A function-local import of an hvdbench module is there only because the module
    imports one of :data:`HEAVY` at its top, or imports a module that does."""
    top: dict[str, set[str]] = {m: set() for m in modules()}
    for i in imports():
        if not i.local:
            top[i.source].add(i.target)

    def heavy(m: str, seen: set[str]) -> bool:
        if m in seen:
            return False
        seen.add(m)
        return any(
            t.split(".")[0] in HEAVY or (t in top and heavy(t, seen)) for t in top.get(m, ())
        )

    needless = [
        f"{i.source}:{i.line} imports {i.target} inside a function; import it at the top"
        for i in internal()
        if i.local and not heavy(i.target, set()) and i.source not in COMMAND_LINE
    ]
    assert needless == []


# The checker itself: a cycle and an upward import are found.


def test_cycles_are_found() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(g) == [["a", "b", "c"], ["e"]]


@pytest.mark.parametrize(
    ("source", "target", "upward"),
    [
        ("hvdbench.config", "hvdbench.launch.launcher", True),
        ("hvdbench.study.sweep", "hvdbench.cli", True),
        ("hvdbench.components.runtime", "hvdbench.launch.topology", False),
        ("hvdbench.config", "hvdbench.models.specs", False),
        ("hvdbench.models", "hvdbench.config", False),
    ],
)
def test_layer_order(source: str, target: str, upward: bool) -> None:
    assert (layer(target) < layer(source)) is upward
