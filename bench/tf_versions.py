"""Two TensorFlow releases side by side in one run (issue 17's benchmark).

Each round runs `bench/perf.py --only harness` with the Horovod rows as variants (with
`--ps`, also the parameter-server rows that have targets), once with
each venv's Python, alternating venvs; so both releases meet the same drift of a noisy
machine. Per release it gives each row's images/sec and ratio to that release's own
communication-free limit (min / median / max over the rounds); across releases, each row's
images/sec of the later venv over the first one's, round by round.

    python bench/tf_versions.py --venv .venv-tf2.14 --venv .venv [--rounds 3] [--steps 30] [--ps]

It is a benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))  # hvdbench.components.record for the summary, under any python3

import perf  # noqa: E402  (bench/perf.py: the table's CPU line)

# perf.py's variants: the Horovod 2-rank rows under each launcher.
VARIANTS = [
    "horovod, mpirun (defaults)|mpirun",
    "horovod, horovodrun --gloo (defaults)|horovodrun",
]
HARNESS = "harness overhead: hvdbench 1 rank / minimal loop"


def tf_version(venv: Path) -> str:
    out = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import hvdbench.tfcompat as t; print(t.tensorflow_version())",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    return out.stdout.strip() or "?"


def one_round(venv: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [
        str(venv / "bin/python"),
        str(REPO / "bench/perf.py"),
        "--only=harness",
        "--repeats=1",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--model={args.model}",
        f"--batch={args.batch}",
        f"--out={out}",
        *[f"--variant={v}" for v in variants(args)],
    ]
    subprocess.run(cmd, check=True, cwd=REPO, timeout=3600, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def variants(args: argparse.Namespace) -> list[str]:
    """perf.py --variant texts of one round: the Horovod rows, the ps rows with --ps, and
    the user's own."""
    ps = [perf.variant_text(v) for v in perf.targeted_ps_variants()] if args.ps else []
    return [*VARIANTS, *ps, *args.variant]


def rows(result: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Row label -> (images/sec, ratio to its reference) of one perf.py round."""
    got = {}
    for r in result["results"]:
        if "ratio" not in r:
            continue
        # perf.py's names: "harness overhead: ...", "one rank: ... (x N at once)",
        # "horovod, mpirun (defaults) (2 ranks) / limit"
        label = "harness" if r["name"].startswith("harness") else r["name"].split(" (")[0]
        got[label] = (r["median_ours"], r["ratio"])
    return got


def spread(xs: list[float]) -> str:
    return f"{min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f}"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--venv",
        action="append",
        required=True,
        type=Path,
        help="repeatable; the first is the baseline",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--ps",
        action="store_true",
        help="also the parameter-server rows with targets: sync, async staged, "
        "distributed_replicated",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="repeatable; another row, in perf.py's --variant form "
        "('label|launcher|--overrides ...|VAR=value ...')",
    )
    p.add_argument("--out", type=Path, default=REPO / "tf-versions.json")
    args = p.parse_args()
    if len(args.venv) < 2:
        p.error("--venv: give at least two venvs (the first is the baseline)")
    for v in args.venv:
        if not (v / "bin/python").exists():
            p.error(f"--venv: {v} has no bin/python")
    started = time.time()
    versions = [tf_version(v) for v in args.venv]
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {tv: [] for tv in versions}
    raw: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for venv, tv in zip(args.venv, versions):
                res = one_round(venv, args, Path(tmp) / f"{k}-{tv}.json")
                raw.append({"round": k + 1, "tensorflow": tv, "venv": str(venv), **res})
                runs[tv].append(rows(res))
                summary = ", ".join(
                    f"{lab} {ips:.1f} ({r:.3f})" for lab, (ips, r) in runs[tv][-1].items()
                )
                print(
                    f"[{time.strftime('%H:%M:%S')}] round {k + 1}, TensorFlow {tv}: {summary}",
                    flush=True,
                )
    labels = list(runs[versions[0]][0])
    from hvdbench.components import record

    hw = record.hardware()
    lines = [
        f"model {args.model}, batch {args.batch}, {args.steps} measured steps, {args.rounds} rounds "
        "alternating the venvs; images/sec (median), ratio to the same release's limit "
        "(min / median / max over rounds)",
        f"CPU: {perf.machine_line(hw)}",
        "",
        "| row | TensorFlow | images/sec | ratio: min / median / max |",
        "|---|---|---:|---|",
    ]
    for lab in labels:
        for tv in versions:
            ips = [r[lab][0] for r in runs[tv]]
            lines.append(
                f"| {lab} | {tv} | {statistics.median(ips):.1f} | {spread([r[lab][1] for r in runs[tv]])} |"
            )
    lines += [
        "",
        f"| row | images/sec over {versions[0]}'s, same round: min / median / max |",
        "|---|---|",
    ]
    cross: dict[str, dict[str, list[float]]] = {}
    for lab in labels:
        for tv in versions[1:]:
            xs = [b[lab][0] / a[lab][0] for a, b in zip(runs[versions[0]], runs[tv])]
            cross.setdefault(tv, {})[lab] = xs
            lines.append(f"| {lab}, {tv} | {spread(xs)} |")
    text = "\n".join(lines)
    print(text)
    perf.write_json(
        args.out,
        args,
        started,
        hw,
        text,
        versions=versions,
        rows={tv: runs[tv] for tv in versions},
        same_round_ratio=cross,
        rounds=raw,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
