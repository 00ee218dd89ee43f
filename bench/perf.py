"""hvdbench's performance suite: ratios measured side by side in one run (`make perf`).

Each ratio alternates its two sides a few times and takes the medians, so that slow drift of
a noisy machine hits both sides alike. It prints a table and writes it as JSON together
with every command that was run. It is a benchmark, not a test: nothing here asserts.

    python bench/perf.py [--model resnet20] [--batch 32] [--repeats 3] [--out perf.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
COMMANDS: list[str] = []


def env() -> dict[str, str]:
    e = {
        k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM", "HOROVOD_", "PMIX_"))
    }
    e.update(
        PYTHONPATH=str(REPO),
        TF_CPP_MIN_LOG_LEVEL="2",
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
    )
    return e


def sh(cmd: list[str], timeout: float = 900) -> str:
    COMMANDS.append(" ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def hvdbench_run(args: list[str], out_dir: str) -> dict[str, Any]:
    """Run `hvdbench run ARGS` and return its record."""
    before = set(Path(out_dir).glob("*.json"))
    sh([PY, "-m", "hvdbench", "run", *args, f"--output.dir={out_dir}"])
    (new,) = set(Path(out_dir).glob("*.json")) - before
    return json.loads(new.read_text())


def images_per_sec(text: str) -> float:
    return float(re.findall(r"images/sec: ([\d.]+)", text)[-1])


def alternate(a: Any, b: Any, repeats: int) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for _ in range(repeats):
        xs.append(a())
        ys.append(b())
    return xs, ys


def common(args: argparse.Namespace, steps: int | None = None) -> list[str]:
    return [
        f"--model.name={args.model}",
        f"--train.per_device_batch_size={args.batch}",
        f"--train.num_warmup_steps={args.warmup}",
        f"--train.num_steps={steps or args.steps}",
        f"--train.display_every={10**6}",
    ]


def harness_overhead(args: argparse.Namespace, out: str) -> dict[str, Any]:
    """1. One-rank hvdbench over a minimal hand-written tf.function loop."""
    threads = len(os.sched_getaffinity(0))

    def ours() -> float:
        rec = hvdbench_run(
            ["--np", "1", *common(args), "--train.weight_decay=0", "--train.optimizer=momentum"],
            out,
        )
        return float(rec["totals"]["total_images_per_sec"])

    def minimal() -> float:
        return images_per_sec(
            sh(
                [
                    PY,
                    str(REPO / "bench" / "minimal_loop.py"),
                    f"--model={args.model}",
                    f"--batch={args.batch}",
                    f"--threads={threads}",
                    f"--warmup={args.warmup}",
                    f"--steps={args.steps}",
                ]
            )
        )

    xs, ys = alternate(ours, minimal, args.repeats)
    return summary("harness overhead: hvdbench 1 rank / minimal loop", xs, ys, 0.98)


def limit_run(args: argparse.Namespace, n: int, out: str) -> float:
    """N one-rank runs started together, each pinned to its own cores, exchanging nothing."""
    cores = sorted(os.sched_getaffinity(0))
    per = max(1, len(cores) // n)
    procs = []
    dirs = []
    for i in range(n):
        mine = cores[i * per : (i + 1) * per] or [cores[i % len(cores)]]
        d = tempfile.mkdtemp(dir=out)
        dirs.append(d)
        cmd = [
            "taskset",
            "-c",
            ",".join(map(str, mine)),
            PY,
            "-m",
            "hvdbench",
            "run",
            "--np",
            "1",
            *common(args),
            f"--runtime.intra_op_threads={len(mine)}",
            f"--output.dir={d}",
        ]
        COMMANDS.append(" ".join(cmd))
        procs.append(
            subprocess.Popen(
                cmd,
                env=env(),
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"limit run failed: {err[-2000:]}")
    total = 0.0
    for d in dirs:
        (rec,) = Path(d).glob("*.json")
        total += json.loads(rec.read_text())["totals"]["total_images_per_sec"]
    return total


def horovod_scaling(args: argparse.Namespace, out: str, launcher: str) -> dict[str, Any]:
    """2. N ranks of Horovod mode over the communication-free limit at the same N."""
    n = args.ranks

    def ours() -> float:
        rec = hvdbench_run(["--np", str(n), f"--launch.launcher={launcher}", *common(args)], out)
        return float(rec["totals"]["total_images_per_sec"])

    xs, ys = alternate(ours, lambda: limit_run(args, n, out), args.repeats)
    return summary(f"horovod {n} ranks ({launcher}) / limit", xs, ys, 0.90)


def batch_scaling(args: argparse.Namespace, out: str) -> dict[str, Any]:
    """5. Step time against per-device batch; least-squares t = fixed + per_image * batch."""
    sizes = [16, 32, 64, 128]
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(max(1, args.repeats - 1)):
        for b in sizes:
            rec = hvdbench_run(
                [
                    "--np",
                    "1",
                    f"--model.name={args.model}",
                    f"--train.per_device_batch_size={b}",
                    f"--train.num_warmup_steps={args.warmup}",
                    f"--train.num_steps={args.steps}",
                    f"--train.display_every={10**6}",
                ],
                out,
            )
            times[b].append(float(rec["totals"]["step_time_median"]))
    med = {b: statistics.median(v) for b, v in times.items()}
    xs, ys = list(med), list(med.values())
    slope, intercept = statistics.linear_regression(xs, ys)
    fitted = [intercept + slope * x for x in xs]
    ss_res = sum((y - f) ** 2 for y, f in zip(ys, fitted))
    ss_tot = sum((y - statistics.fmean(ys)) ** 2 for y in ys)
    return {
        "name": "step time vs per-device batch (1 rank)",
        "median_step_time_s": {str(b): t for b, t in med.items()},
        "fixed_overhead_ms": intercept * 1000,
        "per_image_ms": slope * 1000,
        "r_squared": 1 - ss_res / ss_tot if ss_tot else 1.0,
        "fixed_share_at_32": intercept / (intercept + slope * 32),
    }


def summary(name: str, ours: list[float], ref: list[float], target: float) -> dict[str, Any]:
    ratio = statistics.median(ours) / statistics.median(ref)
    return {
        "name": name,
        "ours": ours,
        "reference": ref,
        "median_ours": statistics.median(ours),
        "median_reference": statistics.median(ref),
        "ratio": ratio,
        "target": target,
        "meets_target": ratio >= target,
    }


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"model {args.model}, per-device batch {args.batch}, {args.steps} measured steps, "
        f"{args.repeats} alternations, medians; {os.cpu_count()} cores",
        "",
        "| measurement | ours | reference | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "ratio" in r:
            lines.append(
                f"| {r['name']} | {r['median_ours']:.1f} | {r['median_reference']:.1f} | "
                f"{r['ratio']:.3f} | {r['target']:.2f} |"
            )
    for r in results:
        if "fixed_overhead_ms" in r:
            steps = ", ".join(f"{b}: {t * 1000:.1f} ms" for b, t in r["median_step_time_s"].items())
            lines += [
                "",
                f"{r['name']}: {steps}; fit fixed {r['fixed_overhead_ms']:.1f} ms + "
                f"{r['per_image_ms']:.3f} ms/image (R^2 {r['r_squared']:.4f}); fixed share at "
                f"batch 32: {r['fixed_share_at_32']:.1%}",
            ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--only",
        default="harness,horovod,batch",
        help="comma-separated parts: harness, horovod, horovod_mpi, batch",
    )
    p.add_argument("--out", default=str(REPO / "perf.json"))
    args = p.parse_args()
    parts = set(args.only.split(","))
    started = time.time()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as out:
        if "harness" in parts:
            results.append(harness_overhead(args, out))
        if "horovod" in parts:
            results.append(horovod_scaling(args, out, "horovodrun"))
        if "horovod_mpi" in parts:
            results.append(horovod_scaling(args, out, "mpirun"))
        if "batch" in parts:
            results.append(batch_scaling(args, out))
    text = table(results, args)
    print(text)
    Path(args.out).write_text(
        json.dumps(
            {
                "args": vars(args),
                "seconds": time.time() - started,
                "results": results,
                "table": text,
                "commands": COMMANDS,
            },
            indent=1,
        )
    )
    print(f"\nwritten to {args.out} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
