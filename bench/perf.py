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


def env(repo: Path = REPO) -> dict[str, str]:
    """The benchmarks' environment, running ``repo``'s hvdbench."""
    e = {
        k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM", "HOROVOD_", "PMIX_"))
    }
    e.update(
        PYTHONPATH=str(repo),
        TF_CPP_MIN_LOG_LEVEL="2",
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
    )
    return e


def sh(
    cmd: list[str],
    timeout: float = 900,
    extra_env: dict[str, str] | None = None,
    repo: Path = REPO,
) -> str:
    """``cmd``'s output, run in ``repo`` (``python -m`` puts it first on the path) on
    its code; a RuntimeError with its stderr when it fails."""
    prefix = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
    COMMANDS.append(f"{prefix} {' '.join(cmd)}".strip())
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**env(repo), **(extra_env or {})},
        timeout=timeout,
        cwd=repo,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def hvdbench_run(
    args: list[str], out_dir: str, extra_env: dict[str, str] | None = None, repo: Path = REPO
) -> dict[str, Any]:
    """Run `hvdbench run ARGS` (``repo``'s) and return its record."""
    before = set(Path(out_dir).glob("*.json"))
    cmd = [PY, "-m", "hvdbench", "run", *args, f"--output.dir={out_dir}"]
    sh(cmd, extra_env=extra_env, repo=repo)
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
        rec = hvdbench_run(["--np", "1", *common(args)], out)  # the loss minimal_loop has
        cpu["ours"].append(cpu_ms_per_image([rec]))
        return float(rec["totals"]["total_images_per_sec"])

    def minimal() -> float:
        text = sh(minimal_loop_cmd(args, threads))
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


def pinned_slices(n: int) -> list[list[int]]:
    """The cores of each of N communication-free processes: an equal slice each."""
    cores = sorted(os.sched_getaffinity(0))
    per = max(1, len(cores) // n)
    return [cores[i * per : (i + 1) * per] or [cores[i % len(cores)]] for i in range(n)]


def run_together(cmds: list[tuple[list[str], dict[str, str]]]) -> list[str]:
    """Start every command at the same moment and return their outputs, in order."""
    procs = []
    for cmd, own in cmds:
        COMMANDS.append(" ".join([*(f"{k}={v}" for k, v in own.items()), *cmd]))
        procs.append(
            subprocess.Popen(
                cmd,
                env={**env(), **own},
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"limit run failed: {err[-2000:]}")
        outs.append(out)
    return outs


def limit_records(args: argparse.Namespace, n: int, out: str) -> list[dict[str, Any]]:
    """The records of N one-rank hvdbench runs started together, each pinned to its own
    cores (and, with --gpus, given its own GPU, as hvdbench gives each local rank one)."""
    dirs, cmds = [], []
    for i, mine in enumerate(pinned_slices(n)):
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
        cmds.append((cmd, {"CUDA_VISIBLE_DEVICES": str(i % args.gpus)} if args.gpus else {}))
    run_together(cmds)
    records = []
    for d in dirs:
        (rec,) = Path(d).glob("*.json")
        records.append(json.loads(rec.read_text()))
    return records


def minimal_loop_cmd(args: argparse.Namespace, threads: int) -> list[str]:
    """bench/minimal_loop.py with this run's model, batch and steps on ``threads`` threads."""
    return [
        PY,
        str(REPO / "bench" / "minimal_loop.py"),
        f"--model={args.model}",
        f"--batch={args.batch}",
        f"--threads={threads}",
        f"--warmup={args.warmup}",
        f"--steps={args.steps}",
    ]


def minimal_loops(args: argparse.Namespace, n: int) -> tuple[float, float]:
    """N minimal loops (bench/minimal_loop.py) started together, each pinned to its own
    cores: their summed images/sec and mean CPU ms per image."""
    cmds = []
    for i, mine in enumerate(pinned_slices(n)):
        cmd = ["taskset", "-c", ",".join(map(str, mine)), *minimal_loop_cmd(args, len(mine))]
        cmds.append((cmd, {"CUDA_VISIBLE_DEVICES": str(i % args.gpus)} if args.gpus else {}))
    outs = run_together(cmds)
    rate = sum(images_per_sec(o) for o in outs)
    cpu = statistics.fmean(float(re.findall(r"cpu ms/image: ([\d.]+)", o)[-1]) for o in outs)
    return rate, cpu


def limit_round(args: argparse.Namespace, n: int, out: str) -> dict[str, float]:
    """One round's communication-free limit at N: the better of N pinned one-rank hvdbench
    runs and N pinned minimal loops (a ratio above 1 would say the reference was not the
    best communication-free run). Their ratio is also the one-rank harness overhead."""
    recs = limit_records(args, n, out)
    ours = sum(r["totals"]["total_images_per_sec"] for r in recs)
    ours_cpu = cpu_ms_per_image(recs)
    minimal, minimal_cpu = minimal_loops(args, n)
    best_is_ours = ours >= minimal
    return {
        "hvdbench_pinned": ours,
        "hvdbench_pinned_cpu_ms_per_image": ours_cpu,
        "minimal_pinned": minimal,
        "minimal_pinned_cpu_ms_per_image": minimal_cpu,
        "limit": max(ours, minimal),
        "limit_cpu_ms_per_image": ours_cpu if best_is_ours else minimal_cpu,
        "limit_from": "hvdbench one-rank runs" if best_is_ours else "minimal loops",
    }


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
PARTS = ("harness", "scaling", "tuning", "ps", "allreduce", "batch", "realdata")
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


def targeted_ps_variants() -> list[Variant]:
    """The parameter-server rows that have targets (TARGETS), as --quick runs them."""
    return [v for v in ps_variants() if v[0] in TARGETS]


def variant_text(v: Variant) -> str:
    """The --variant text of a variant (:func:`parse_variant`'s inverse)."""
    label, launcher, overrides, extra = v
    return "|".join(
        [label, launcher, " ".join(overrides), " ".join(f"{k}={x}" for k, x in extra.items())]
    )


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


# Targets (median ratio, and the floor every round must reach) of issue 18, by label.
TARGETS: dict[str, tuple[float, float | None]] = {
    "horovod, mpirun (defaults)": (0.95, 0.90),
    "parameter_server sync": (0.90, None),
    "parameter_server async staged": (0.95, None),
    "distributed_replicated sync": (0.90, None),
}
SUSPECT = 1.02  # a round above this says its limit was not the best communication-free run


def variants(args: argparse.Namespace, out: str, specs: list[Variant]) -> list[dict[str, Any]]:
    """Each variant's N-rank total over the communication-free limit at the same N.

    One round runs the limit (:func:`limit_round`) and then every variant; the rounds
    repeat. Each row gives the ratio of medians and the spread of the per-round ratios, so
    every variant meets the same drift. The limit's two sides also give the one-rank row:
    pinned one-rank hvdbench over the pinned minimal loop."""
    n = args.ranks
    rounds: list[dict[str, float]] = []
    got: dict[str, list[float]] = {label: [] for label, *_ in specs}
    cpu: dict[str, list[float]] = {label: [] for label, *_ in specs}
    for k in range(args.repeats):
        rounds.append(limit_round(args, n, out))
        lim = rounds[-1]
        print(
            f"[{time.strftime('%H:%M:%S')}] round {k + 1}: limit {lim['limit']:.1f} images/sec "
            f"(hvdbench pinned {lim['hvdbench_pinned']:.1f}, minimal loops "
            f"{lim['minimal_pinned']:.1f})",
            flush=True,
        )
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
                f"= {got[label][-1] / lim['limit']:.3f} of the limit",
                flush=True,
            )
    limits = [r["limit"] for r in rounds]
    limit_cpu = statistics.median(r["limit_cpu_ms_per_image"] for r in rounds)
    one = summary(
        "one rank: hvdbench pinned / minimal loop pinned (x N at once)",
        [r["hvdbench_pinned"] for r in rounds],
        [r["minimal_pinned"] for r in rounds],
        0.98,
    )
    one["cpu_ms_per_image"] = statistics.median(
        r["hvdbench_pinned_cpu_ms_per_image"] for r in rounds
    )
    one["limit_cpu_ms_per_image"] = statistics.median(
        r["minimal_pinned_cpu_ms_per_image"] for r in rounds
    )
    one["limit_rounds"] = rounds
    results = [one]
    for label, _, _, _ in specs:
        target, floor = TARGETS.get(label, (None, None))
        r = summary(f"{label} ({n} ranks) / limit", got[label], limits, target, floor)
        r["cpu_ms_per_image"] = statistics.median(cpu[label])
        r["limit_cpu_ms_per_image"] = limit_cpu
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


def summary(
    name: str,
    ours: list[float],
    ref: list[float],
    target: float | None,
    floor: float | None = None,
) -> dict[str, Any]:
    """The ratio of medians, the per-round ratios (min / median / max), the rounds above
    :data:`SUSPECT`, and whether the target (median) and floor (every round) are met."""
    ratio = statistics.median(ours) / statistics.median(ref)
    rounds = [a / b for a, b in zip(ours, ref)]
    met = None if target is None else ratio >= target and (floor is None or min(rounds) >= floor)
    return {
        "name": name,
        "ours": ours,
        "reference": ref,
        "median_ours": statistics.median(ours),
        "median_reference": statistics.median(ref),
        "ratio": ratio,
        "round_ratios": rounds,
        "round_min": min(rounds),
        "round_median": statistics.median(rounds),
        "round_max": max(rounds),
        "suspect_rounds": [i + 1 for i, x in enumerate(rounds) if x > SUSPECT],
        "target": target,
        "floor": floor,
        "meets_target": met,
    }


def table(results: list[dict[str, Any]], args: argparse.Namespace, hw: dict[str, Any]) -> str:
    lines = [
        f"model {args.model}, per-device batch {args.batch}, {args.steps} measured steps, "
        f"{args.repeats} alternations, medians; {os.cpu_count()} cores",
        f"CPU: {machine_line(hw)}",
        f"Software: {software_line()}",
    ]
    if any("ratio" in r for r in results):
        lines += [
            "",
            "| measurement | ours | reference | ratio | rounds: min / median / max | target "
            "| CPU ms/image (ours, ref) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    for r in results:
        if "ratio" in r:
            cpu = (
                f"{r['cpu_ms_per_image']:.2f}, {r['limit_cpu_ms_per_image']:.2f}"
                if "cpu_ms_per_image" in r
                else ""
            )
            target = "" if r["target"] is None else f"{r['target']:.2f}"
            if r.get("floor") is not None:
                target += f" (every round {r['floor']:.2f})"
            if r["meets_target"] is not None:
                target += " met" if r["meets_target"] else " **missed**"
            spread = f"{r['round_min']:.3f} / {r['round_median']:.3f} / {r['round_max']:.3f}"
            if r["suspect_rounds"]:
                spread += f" (suspect round {', '.join(map(str, r['suspect_rounds']))})"
            lines.append(
                f"| {r['name']} | {r['median_ours']:.1f} | {r['median_reference']:.1f} | "
                f"{r['ratio']:.3f} | {spread} | {target} | {cpu} |"
            )
    if any(r.get("suspect_rounds") for r in results):
        lines.append(
            f"\nsuspect: a round above {SUSPECT} of its limit means the limit was not the "
            "best communication-free run of that round"
        )
    for r in results:
        if "real_over_synthetic" in r:
            lines += [
                "",
                "| mode: real data / synthetic, same run | rounds: min / median / max | target |",
                "|---|---:|---:|",
            ]
            break
    for r in results:
        if "real_over_synthetic" in r:
            x = r["real_over_synthetic"]
            lines.append(
                f"| {r['name']} | {min(x):.3f} / {statistics.median(x):.3f} / {max(x):.3f} | "
                f"{r['target']:.2f} {'met' if statistics.median(x) >= r['target'] else '**missed**'} |"
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


def machine_line(hw: dict[str, Any]) -> str:
    """lscpu's model name and what tells same-named CPUs apart (from
    :func:`hvdbench.components.record.hardware`), for every figure."""
    isa = "+".join(hw["cpu_isa"]) or "no AVX"
    return f"{hw['cpu_model']} ({hw['cpu_id']}; {isa}; BogoMIPS {hw['bogomips']})"


def software() -> dict[str, str | None]:
    """The releases the figures were taken with (the gRPC modes' figures move with the
    TensorFlow release: docs/PERFORMANCE.md), from the installed distributions' metadata."""
    from hvdbench import tfcompat
    from hvdbench.components import record

    return {
        "tensorflow": tfcompat.tensorflow_version(),
        "horovod": record.installed_version("horovod"),
    }


def software_line() -> str:
    sw = {k: v or "not installed" for k, v in software().items()}
    return f"TensorFlow {sw['tensorflow']}, Horovod {sw['horovod']}"


def commit() -> str | None:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    )
    return out.stdout.strip() or None


# One run per mode reading real data, two compute ranks each (two devices in one process
# for the local-device modes, as the tests start them: tests/modes.py), with
# data.compare_synthetic: the record's input_pipeline holds real against synthetic step time
# of the same run.


def real_data(args: argparse.Namespace, out: str) -> list[dict[str, Any]]:
    """Real data (CIFAR-10's layout, from the tests' generator) over synthetic, same run,
    per mode: the input pipeline must not be the bottleneck (target 0.95)."""
    sys.path.insert(0, str(REPO))
    from tests import datagen
    from tests.modes import two_ranks_each

    data = datagen.write_cifar10(Path(out) / "cifar10", per_file=2000, files=5, test=500)
    modes = two_ranks_each(*args.modes)
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode, flags in modes.items():
            rec = hvdbench_run(
                [
                    *flags,
                    *common(args),
                    "--data.source=cifar10",
                    f"--data.dir={data}",
                    "--data.compare_synthetic=true",
                ],
                out,
            )
            x = 1 / rec["input_pipeline"]["real_over_synthetic_step_time"]
            ratios[mode].append(x)
            print(f"[{time.strftime('%H:%M:%S')}] {mode}: real / synthetic {x:.3f}", flush=True)
    return [
        {"name": mode, "real_over_synthetic": xs, "target": 0.95} for mode, xs in ratios.items()
    ]


def mode_list(text: str) -> list[str]:
    """--modes: comma-separated mode names, each one of hvdbench's (checked before any run)."""
    sys.path.insert(0, str(REPO))
    from tests.modes import MODES

    names = [m for m in text.split(",") if m]
    unknown = [m for m in names if m not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown)}: not a mode; one of {', '.join(MODES)}"
        )
    return names


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
    p.add_argument(
        "--modes",
        type=mode_list,
        default=[],
        help="realdata: these modes only, comma-separated (default: all six)",
    )
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (10)")
    p.add_argument("--steps", type=int, default=None, help="measured steps (60; --quick 30)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated parts, of: {', '.join(PARTS)} (default: all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the rows with targets only: the limit and one-rank row, Horovod's defaults "
        "under mpirun, parameter_server sync and async staged, distributed_replicated; "
        "30 measured steps (6 minutes on the faster 2-core machine class; expect 12-17 on "
        "the slower one, whose steps are 3.7x longer)",
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
    if args.warmup is None:
        args.warmup = 10
    if args.steps is None:
        args.steps = 30 if args.quick else 60
    if args.only is None:
        args.only = "" if args.quick else ",".join(PARTS)
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
    if args.quick:
        specs += [("horovod, mpirun (defaults)", "mpirun", [], {}), *targeted_ps_variants()]
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
        if "realdata" in parts:
            results.extend(real_data(args, out))
    from hvdbench.components import record

    hw = record.hardware()
    text = table(results, args, hw)
    print(text)
    write_json(args.out, args, started, hw, text, results=results, commands=COMMANDS)
    return 0


def write_json(
    path: str | Path,
    args: argparse.Namespace,
    started: float,
    hw: dict[str, Any],
    text: str,
    **body: Any,
) -> None:
    """A benchmark's JSON: its arguments, date, commit, CPU and duration, then ``body``
    and the printed table (also bench/tf_versions.py's)."""
    Path(path).write_text(
        json.dumps(
            {
                "args": vars(args),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                "commit": commit(),
                "machine": machine_line(hw),
                "hardware": hw,
                "software": software(),
                "seconds": time.time() - started,
                **body,
                "table": text,
            },
            indent=1,
            default=str,  # Path arguments
        )
    )
    print(f"\nwritten to {path} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
