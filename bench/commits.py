"""Two or more commits side by side in one run: the same-run A/B behind a change's figures.

Each commit is checked out in a temporary git worktree (``.`` is the working tree as it
is, uncommitted changes included) and run on its own ``PYTHONPATH`` with this Python.
Every round runs each variant once per commit, in ABBA order (reversed every other round),
so the slow drift of a noisy machine meets every side alike. Per variant and commit it
prints images/sec and the ranks' CPU ms per image (min / median / max over the rounds),
and each commit's images/sec over the first commit's, round by round (min / median /
max). CPU per image moves with the VM's own speed; when it moves as much as the ratio,
the ratio is noise.

    python bench/commits.py --commit 11258da --commit . --rounds 6 \\
        --variant "sync|--mode.name=parameter_server --ps.sync=true" \\
        --variant "drepl|--mode.name=distributed_replicated" \\
        -- --np 2 --model.name=resnet20 --train.num_steps=40

The arguments after ``--`` go to every ``hvdbench run``. It is a benchmark, not a test:
nothing here asserts.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import perf  # noqa: E402  (bench/perf.py: its runner, CPU line and JSON)


def checkout(commit: str, stack: ExitStack) -> Path:
    """A directory holding ``commit``: the repository itself for ``.``, else a detached
    worktree that ``stack`` removes."""
    if commit == ".":
        return REPO
    where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hvdbench-ab-")))
    path = where / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(path), commit], cwd=REPO, check=True
    )
    stack.callback(subprocess.run, ["git", "worktree", "remove", "--force", str(path)], cwd=REPO)
    return path


def run_once(tree: Path, args: list[str]) -> dict[str, Any]:
    """One ``hvdbench run`` of ``tree``'s code: its images/sec and CPU ms per image."""
    with tempfile.TemporaryDirectory() as out:
        rec = perf.hvdbench_run(args, out, repo=tree)
    return {
        "images_per_sec": rec["totals"]["total_images_per_sec"],
        "cpu_ms_per_image": perf.cpu_ms_per_image([rec]),
        "git_sha": rec.get("git_sha"),
        "command": f"cd {tree} && {perf.COMMANDS[-1]}",
    }


def spread(xs: list[float], fmt: str = ".3f") -> str:
    if not xs:
        return "-"
    return " / ".join(format(x, fmt) for x in (min(xs), statistics.median(xs), max(xs)))


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, _, args = text.partition("|")
    if not label:
        raise SystemExit(f"commits.py: --variant {text!r}: expected 'LABEL|ARGS'")
    return label, shlex.split(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    common = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", action="append", required=True, help="a git revision, or .")
    p.add_argument("--variant", action="append", default=[], help="'LABEL|ARGS' (repeatable)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", default="commits.json", help="the JSON written at the end")
    args = p.parse_args(own)
    if len(args.commit) < 2:
        p.error("--commit: give at least two (the first is the reference)")
    variants = [parse_variant(v) for v in args.variant] or [("run", [])]
    from hvdbench.components import record

    hw = record.hardware()
    started = time.time()
    print(f"CPU: {perf.machine_line(hw)}\nSoftware: {perf.software_line()}", flush=True)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with ExitStack() as stack:
        trees = {c: checkout(c, stack) for c in args.commit}
        for r in range(args.rounds):
            order = args.commit if r % 2 == 0 else args.commit[::-1]
            for label, extra in variants:
                for c in order:
                    got = run_once(trees[c], [*common, *extra])
                    runs.setdefault((label, c), []).append(got)
                    print(
                        f"round {r + 1} {label} {c}: {got['images_per_sec']:.1f} images/sec, "
                        f"{got['cpu_ms_per_image']:.2f} CPU ms/image",
                        flush=True,
                    )
    lines = ["", "| variant | commit | images/sec | CPU ms/image | over the first, per round |"]
    lines.append("|---|---|---:|---:|---:|")
    summary = []
    for label, _ in variants:
        first = [x["images_per_sec"] for x in runs[(label, args.commit[0])]]
        for c in args.commit:
            ips = [x["images_per_sec"] for x in runs[(label, c)]]
            cpu = [x["cpu_ms_per_image"] for x in runs[(label, c)]]
            ratios = [a / b for a, b in zip(ips, first)] if c != args.commit[0] else []
            lines.append(
                f"| {label} | {c} | {spread(ips, '.1f')} | {spread(cpu, '.2f')} | "
                f"{spread(ratios)} |"
            )
            summary.append(
                {"variant": label, "commit": c, "runs": runs[(label, c)], "ratios_to_first": ratios}
            )
    text = "\n".join(lines)
    print(text)
    perf.write_json(args.out, args, started, hw, text, common=common, results=summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
