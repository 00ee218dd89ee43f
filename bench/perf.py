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


def sh(cmd: list[str], timeout: float = 900, extra_env: dict[str, str] | None = None) -> str:
    prefix = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
    COMMANDS.append(f"{prefix} {' '.join(cmd)}".strip())
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**env(), **(extra_env or {})},
        timeout=timeout,
        cwd=REPO,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def hvdbench_run(
    args: list[str], out_dir: str, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `hvdbench run ARGS` and return its record."""
    before = set(Path(out_dir).glob("*.json"))
    sh([PY, "-m", "hvdbench", "run", *args, f"--output.dir={out_dir}"], extra_env=extra_env)
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

    cpu: dict[str, list[float]] = {"ours": [], "ref": []}

    def ours() -> float:
        rec = hvdbench_run(
            ["--np", "1", *common(args), "--train.weight_decay=0", "--train.optimizer=momentum"],
            out,
        )
        cpu["ours"].append(cpu_ms_per_image([rec]))
        return float(rec["totals"]["total_images_per_sec"])

    def minimal() -> float:
        text = sh(
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
        cpu["ref"].append(float(re.findall(r"cpu ms/image: ([\d.]+)", text)[-1]))
        return images_per_sec(text)

    xs, ys = alternate(ours, minimal, args.repeats)
    r = summary("harness overhead: hvdbench 1 rank / minimal loop", xs, ys, 0.98)
    r["cpu_ms_per_image"] = statistics.median(cpu["ours"])
    r["limit_cpu_ms_per_image"] = statistics.median(cpu["ref"])
    return r


def cpu_ms_per_image(records: list[dict[str, Any]]) -> float:
    """Mean over ranks of each rank's CPU milliseconds per image in the measured steps."""
    per = [p["cpu_ms_per_image"] for r in records for p in r["per_rank"]]
    return statistics.fmean(per)


def limit_records(args: argparse.Namespace, n: int, out: str) -> list[dict[str, Any]]:
    """The records of N one-rank runs started together, each pinned to its own cores (and,
    with --gpus, given its own GPU, as hvdbench gives each local rank one)."""
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
        own = {"CUDA_VISIBLE_DEVICES": str(i % args.gpus)} if args.gpus else {}
        COMMANDS.append(" ".join([*(f"{k}={v}" for k, v in own.items()), *cmd]))
        procs.append(
            subprocess.Popen(
                cmd,
                env={**env(), **own},
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
    records = []
    for d in dirs:
        (rec,) = Path(d).glob("*.json")
        records.append(json.loads(rec.read_text()))
    return records


# The tuning steps that docs/PERFORMANCE.md explains, cumulative from a naive set-up to
# hvdbench's defaults: (label, launcher, overrides, extra environment). The last entry of
# each launcher is what `hvdbench run` does with no options.
NAIVE = [
    "--runtime.bind_cores=false",  # every rank sees every core ...
    "--runtime.intra_op_threads=0",  # ... and TF sizes its pools to all of them
    "--horovod.num_groups=0",  # one all-reduce per gradient, fused by the cycle
    "--horovod.cycle_time_ms=1",  # Horovod's own default
]
Variant = tuple[str, str, list[str], dict[str, str]]
PARTS = ("harness", "scaling", "tuning", "ps", "allreduce", "batch")
TUNING: list[Variant] = [
    # mpirun, cumulative: naive -> + binding -> + yielding (= the defaults row of `scaling`)
    (
        "tuning 0: naive mpirun (TF pools on all cores, Open MPI spinning)",
        "mpirun",
        [*NAIVE, "--runtime.mpi_yield_when_idle=false"],
        {},
    ),
    (
        "tuning 1: + one core slice per rank (Open MPI spinning)",
        "mpirun",
        ["--runtime.mpi_yield_when_idle=false"],
        {},
    ),
    # horovodrun --gloo: naive -> + binding (= its defaults row) -> + one group, 5 ms cycle
    ("tuning 2: naive horovodrun --gloo (TF pools on all cores)", "horovodrun", NAIVE, {}),
    (
        "tuning 3: horovodrun --gloo, one grouped all-reduce, 5 ms cycle",
        "horovodrun",
        ["--horovod.num_groups=1", "--horovod.cycle_time_ms=5"],
        {},
    ),
    ("tuning 4: horovodrun --mpi", "horovodrun", ["--launch.horovodrun_controller=mpi"], {}),
]


# 3. The parameter-server modes, 1 ps + N workers, over the same limit.
def ps_variants() -> list[Variant]:
    plain: list[Variant] = [
        (
            f"parameter_server {sync}{' staged' if staged else ''}",
            "horovodrun",
            [
                "--mode.name=parameter_server",
                "--ps.num_ps=1",
                f"--ps.sync={'true' if sync == 'sync' else 'false'}",
                f"--ps.staged_vars={'true' if staged else 'false'}",
            ],
            {},
        )
        for sync in ("sync", "async")
        for staged in (False, True)
    ]
    return [
        *plain,
        ("distributed_replicated sync", "horovodrun", ["--mode.name=distributed_replicated"], {}),
        # before the ps modes' core slots: every task unbound, TF's pools on both cores
        (
            "tuning 5: parameter_server async staged, tasks unbound",
            "horovodrun",
            [*plain[3][2], "--runtime.bind_cores=false"],
            {},
        ),
    ]


def parse_variant(text: str) -> Variant:
    """`label|launcher|--a=1 --b=2|VAR=1 VAR2=2` (the last two parts optional)."""
    parts = (text.split("|") + ["", ""])[:4]
    label, launcher, overrides, envs = parts
    return (
        label,
        launcher or "horovodrun",
        overrides.split(),
        dict(e.split("=", 1) for e in envs.split()),
    )


def variants(args: argparse.Namespace, out: str, specs: list[Variant]) -> list[dict[str, Any]]:
    """Each variant's N-rank total over the communication-free limit at the same N.

    One round runs the limit and then every variant; the rounds repeat, and each ratio is
    the variant's median over the limit's median, so every variant meets the same drift."""
    n = args.ranks
    limits: list[float] = []
    limit_cpu: list[float] = []
    got: dict[str, list[float]] = {label: [] for label, *_ in specs}
    cpu: dict[str, list[float]] = {label: [] for label, *_ in specs}
    for _ in range(args.repeats):
        recs = limit_records(args, n, out)
        limits.append(sum(r["totals"]["total_images_per_sec"] for r in recs))
        limit_cpu.append(cpu_ms_per_image(recs))
        for label, launcher, overrides, extra in specs:
            rec = hvdbench_run(
                ["--np", str(n), f"--launch.launcher={launcher}", *common(args), *overrides],
                out,
                extra_env=extra,
            )
            got[label].append(float(rec["totals"]["total_images_per_sec"]))
            cpu[label].append(cpu_ms_per_image([rec]))
            print(
                f"[{time.strftime('%H:%M:%S')}] {label}: {got[label][-1]:.1f} images/sec "
                f"(limit this round {limits[-1]:.1f})",
                flush=True,
            )
    results = []
    for label, _, overrides, _ in specs:
        # the targets: 0.90 for Horovod, 0.80 for the best parameter-server mode
        grpc = any(o.startswith("--mode.name=") and "horovod" not in o for o in overrides)
        target = 0.80 if grpc else 0.90
        r = summary(f"{label} ({n} ranks) / limit", got[label], limits, target)
        r["cpu_ms_per_image"] = statistics.median(cpu[label])
        r["limit_cpu_ms_per_image"] = statistics.median(limit_cpu)
        results.append(r)
    return results


def gradient_exchange(args: argparse.Namespace, out: str) -> dict[str, Any]:
    """4. Horovod's all-reduce busbw over mpi4py's Allreduce of the same numpy-sized buffers,
    both under one mpirun, size by size in turn (hvdbench allreduce --impl horovod,mpi4py)."""
    per_size: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        d = tempfile.mkdtemp(dir=out)
        sh(
            [
                PY,
                "-m",
                "hvdbench",
                "allreduce",
                "--np",
                str(args.ranks),
                "--launcher=mpirun",
                "--impl=horovod,mpi4py",
                f"--sizes={args.allreduce_sizes}",
                f"--max-bytes-per-size={args.allreduce_budget}",
                f"--output={d}",
            ]
        )
        (rec,) = Path(d).glob("*.json")
        for r in json.loads(rec.read_text())["results"]:
            per_size.setdefault((r["implementation"], r["size_bytes"]), []).append(r["busbw_GBps"])
    sizes = sorted({s for _, s in per_size})
    curve: list[dict[str, Any]] = []
    for s in sizes:
        h = statistics.median(per_size[("horovod", s)])
        m = statistics.median(per_size[("mpi4py", s)])
        curve.append(
            {"size_bytes": s, "horovod_busbw_GBps": h, "mpi4py_busbw_GBps": m, "ratio": h / m}
        )

    def first(level: float) -> int | None:
        return next((int(c["size_bytes"]) for c in curve if c["ratio"] >= level), None)

    big = [c["ratio"] for c in curve if c["size_bytes"] >= 64 * 2**20]
    return {
        "name": f"all-reduce busbw, horovod / mpi4py ({args.ranks} ranks, mpirun)",
        "curve": curve,
        "min_ratio_from_64MiB": min(big) if big else None,
        "target_from_64MiB": 0.90,
        "reaches_0.5_at_bytes": first(0.5),
        "reaches_0.9_at_bytes": first(0.9),
    }


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
    ]
    if any("ratio" in r for r in results):
        lines += [
            "",
            "| measurement | ours | reference | ratio | target | CPU ms/image (ours, ref) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for r in results:
        if "ratio" in r:
            cpu = (
                f"{r['cpu_ms_per_image']:.2f}, {r['limit_cpu_ms_per_image']:.2f}"
                if "cpu_ms_per_image" in r
                else ""
            )
            lines.append(
                f"| {r['name']} | {r['median_ours']:.1f} | {r['median_reference']:.1f} | "
                f"{r['ratio']:.3f} | {r['target']:.2f} | {cpu} |"
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
    for r in results:
        if "curve" in r:
            lines += [
                "",
                r["name"],
                "",
                "| size | horovod busbw GB/s | mpi4py busbw GB/s | ratio |",
            ]
            lines.append("|---:|---:|---:|---:|")
            for c in r["curve"]:
                lines.append(
                    f"| {human(c['size_bytes'])} | {c['horovod_busbw_GBps']:.3f} | "
                    f"{c['mpi4py_busbw_GBps']:.3f} | {c['ratio']:.3f} |"
                )
            lo = r["min_ratio_from_64MiB"]
            lines.append(
                f"\nlowest ratio from 64 MiB up: {lo:.3f} (target {r['target_from_64MiB']:.2f}); "
                f"reaches 0.5 at {human(r['reaches_0.5_at_bytes'])}, "
                f"0.9 at {human(r['reaches_0.9_at_bytes'])}"
                if lo is not None
                else "\nno size from 64 MiB up was measured"
            )
    return "\n".join(lines)


def human(n: int | None) -> str:
    if n is None:
        return "never"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


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
        default=",".join(PARTS),
        help=f"comma-separated parts, of: {', '.join(PARTS)}",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        type=parse_variant,
        help="an extra N-rank run to compare with the limit: "
        "'label|launcher|--overrides ...|VAR=value ...' (repeatable)",
    )
    p.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs per node: each one-rank run of the limit then gets its own GPU",
    )
    p.add_argument("--allreduce-sizes", default="1KiB..256MiB")
    p.add_argument(
        "--allreduce-budget",
        default="4GiB",
        help="bytes all-reduced per size and implementation (fewer iterations for big "
        "messages): at 1 GiB a 256 MiB size gets 4 iterations, whose noise decides the "
        "ratio from 64 MiB up",
    )
    p.add_argument("--out", default=str(REPO / "perf.json"))
    args = p.parse_args()
    parts = set(args.only.split(",")) - {""}
    if parts - set(PARTS):
        p.error(f"--only: {', '.join(sorted(parts - set(PARTS)))} not among {', '.join(PARTS)}")
    started = time.time()
    results: list[dict[str, Any]] = []
    # Every N-rank measurement is one variant over the same limit, so they share its runs.
    specs: list[Variant] = []
    if "scaling" in parts:  # 2. hvdbench's defaults under each launcher
        specs += [
            ("horovod, horovodrun --gloo (defaults)", "horovodrun", [], {}),
            ("horovod, mpirun (defaults)", "mpirun", [], {}),
        ]
    if "tuning" in parts:  # the steps from a naive set-up, docs/PERFORMANCE.md
        specs += TUNING
    if "ps" in parts:  # 3.
        specs += ps_variants()
    specs += args.variant
    with tempfile.TemporaryDirectory() as out:
        if "harness" in parts:
            results.append(harness_overhead(args, out))
        if specs:
            results.extend(variants(args, out, specs))
        if "allreduce" in parts:
            results.append(gradient_exchange(args, out))
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
