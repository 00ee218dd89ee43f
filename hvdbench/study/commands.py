"""The study subcommands: ``submit``, ``sweep``, ``allreduce``, ``report``, ``predict``.

``add_parsers`` declares them and ``dispatch`` runs them, so that ``cli.py`` only gains two
lines. Each command validates its input first (exit 2, one line) and imports TensorFlow only
where it measures something.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from argparse import SUPPRESS
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hvdbench import config
from hvdbench.errors import UsageError
from hvdbench.launch import slurm

COMMANDS = ("submit", "sweep", "allreduce", "report", "predict")
TAKES_OVERRIDES = ("submit", "sweep")
# Package data (hvdbench/slurm_scripts), so that submit works when installed, not only from
# a checkout; the checkout's slurm/ links to the same files.
SLURM_DIR = Path(__file__).resolve().parent.parent / "slurm_scripts"


def add_sbatch_options(p: argparse.ArgumentParser) -> None:
    """What sites ask of a job, beyond its size: the same for submit and sweep."""
    p.add_argument("--cpus-per-task", type=int, default=0, help="CPUs per task (per rank)")
    p.add_argument("--gpus-per-node", default="", help="GPUs per node: N or TYPE:N")
    p.add_argument("--gres", default="", help="generic resources, e.g. gpu:4")
    p.add_argument("--exclusive", action="store_true", help="whole nodes, shared with no job")
    p.add_argument("--qos", default="")
    p.add_argument("--constraint", default="", help="node features, e.g. 'a100&ib'")
    p.add_argument("--reservation", default="")
    p.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="any other sbatch option, as one word (repeatable): --sbatch-arg=--mail-type=END",
    )


def sbatch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`slurm.JobRequest` fields of :func:`add_sbatch_options`' options."""
    return {
        "cpus_per_task": args.cpus_per_task,
        "gpus_per_node": args.gpus_per_node,
        "gres": args.gres,
        "exclusive": args.exclusive,
        "qos": args.qos,
        "constraint": args.constraint,
        "reservation": args.reservation,
        "extra": tuple(args.sbatch_arg),
    }


class _Renamed(argparse.Action):
    """An option that was renamed: one line naming the new one, exit code 2."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(*args, **{**kwargs, "nargs": "?"})

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        parser.error(f"{self.option_strings[0]} was renamed to {self.new}")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "submit",
        help="submit a benchmark to Slurm (sbatch with the mode's script in slurm/)",
        description="Build the sbatch command for CONFIG and submit it. Any "
        "--section.key=value argument is passed to every rank.",
    )
    s.add_argument("config", help="TOML config file")
    s.add_argument("--nodes", type=int, required=True)
    s.add_argument("--ntasks-per-node", type=int, required=True)
    s.add_argument("--partition", default="")
    s.add_argument("--time", default="", help="time limit, e.g. 30 or 01:00:00")
    s.add_argument("--account", default="")
    s.add_argument("--job-name", default="")
    s.add_argument(
        "--signal",
        default="",
        help=f"Slurm's warning before the time limit (default: the script's, {slurm.DEFAULT_SIGNAL})",
    )
    s.add_argument(
        "--launcher",
        choices=("srun", "mpirun"),
        default="srun",
        help="Horovod only: srun with the cluster's PMI (HVDBENCH_PMI) or mpirun in the job",
    )
    add_sbatch_options(s)
    s.add_argument("--script", default="", help="sbatch script (default: by mode, in slurm/)")
    s.add_argument("--dry-run", action="store_true", help="print the command and the script")

    w = sub.add_parser(
        "sweep",
        help="weak-scaling sweep: run CONFIG at several rank counts, modes and repeats",
        description="Run the points one after another (locally, as srun steps inside an "
        "allocation, or submitted with --launcher slurm). The per-device batch stays fixed. "
        "Every point leaves a JSON record in --study, failed points included.",
    )
    w.add_argument("config", nargs="?", help="TOML config file")
    w.add_argument("--ranks", required=True, help="compute ranks, e.g. 1,2,4,8")
    w.add_argument("--modes", default="", help="comma-separated modes (default: the config's)")
    w.add_argument(
        "--launcher",
        choices=("auto", "horovodrun", "mpirun", "slurm"),
        default="auto",
        help="auto: the config's launch.launcher (mpirun for Horovod unless set)",
    )
    w.add_argument("--repeats", type=int, default=1)
    w.add_argument("--study", required=True, help="folder of the records")
    w.add_argument(
        "--point-timeout", type=float, default=3600.0, help="seconds per point (0: none)"
    )
    w.add_argument(
        "--slurm-jobs",
        choices=("packed", "per-point"),
        default="packed",
        help="with --launcher slurm outside a job: one allocation of the largest size with "
        "the points as srun steps (packed), or one job per point",
    )
    w.add_argument("--ntasks-per-node", type=int, default=0, help="slurm: tasks per node")
    w.add_argument("--partition", default="")
    w.add_argument("--time", default="")
    w.add_argument("--account", default="")
    add_sbatch_options(w)
    w.add_argument("--dry-run", action="store_true", help="print the commands only")

    a = sub.add_parser(
        "allreduce",
        help="all-reduce micro-benchmark (Horovod and mpi4py): latency, algbw, busbw",
        description="Time the sum all-reduce of float32 messages; busbw = algbw*2(n-1)/n "
        "(nccl-tests). Started alone with --np > 1 it launches itself.",
    )
    a.add_argument("--sizes", default="1KiB..256MiB", help="a..b (x --factor steps) or a,b,c")
    a.add_argument("--factor", type=int, default=2)
    a.add_argument("--model", default="", help="time the gradient sizes of this model instead")
    a.add_argument(
        "--impl", default="horovod,mpi4py", help="comma-separated implementations: horovod, mpi4py"
    )
    a.add_argument("--np", type=int, default=0, help="ranks to launch (0: as launched)")
    a.add_argument("--launcher", choices=("mpirun", "horovodrun"), default="mpirun")
    a.add_argument(
        "--horovodrun-controller",
        choices=("gloo", "mpi"),
        default="gloo",
        help="with --launcher horovodrun: Horovod over Gloo or MPI",
    )
    a.add_argument("--controller", action=_Renamed, new="--horovodrun-controller", help=SUPPRESS)
    a.add_argument(
        "--srun-controller",
        choices=("mpi", "gloo"),
        default="mpi",
        help="under srun: Horovod over the cluster's PMI (mpi) or hvdbench's Gloo rendezvous",
    )
    a.add_argument("--warmup", type=int, default=5)
    a.add_argument("--iters", type=int, default=20)
    a.add_argument("--max-bytes-per-size", default="1GiB", help="fewer iterations for big messages")
    a.add_argument("--output", default="results", help="folder of the JSON record")
    a.add_argument("--dry-run", action="store_true")

    r = sub.add_parser(
        "report",
        help="table (Markdown/CSV) and plot of a study; --baseline for regression checks",
    )
    r.add_argument("study", help="study folder")
    r.add_argument("--csv", default="", help="write the table as CSV here")
    r.add_argument("--plot", default="", help="write the efficiency plot (PNG) here")
    r.add_argument("--baseline", default="", help="another study folder to compare against")
    r.add_argument("--tolerance", default="5%", help="allowed drop below the baseline")

    p = sub.add_parser(
        "predict",
        help="fit the scaling model to a study and predict efficiency at more ranks",
        description="Predict the step time and efficiency at each N three ways: no overlap "
        "of communication and compute (t_c + T), perfect overlap (max(t_c, T)), and, for "
        "Horovod, partial overlap: Horovod's exchange (cycle time and fusion threshold from "
        "the record's config, a negotiation of 2(n-1)α per cycle) simulated against the "
        "backward pass, each gradient ready when the model's per-layer FLOPs say. See "
        "docs/scaling_model.md.",
    )
    p.add_argument("study", help="study folder")
    p.add_argument("--ranks", default="16,64,256,1024")
    p.add_argument(
        "--allreduce",
        action="append",
        default=[],
        help="hvdbench allreduce record or folder (default: the study's own)",
    )
    p.add_argument("--impl", default="horovod", help="which all-reduce figures to fit")
    p.add_argument("--gradient-bytes", type=int, default=0, help="S (default: from the model)")
    p.add_argument("--num-ps", type=int, default=0, help="ps tasks (default: from the config)")
    p.add_argument("--plot", default="", help="efficiency plot with the predictions")
    p.add_argument(
        "--compute",
        default="",
        help="folder with subfolders nN/ holding the records of N communication-free one-rank "
        "runs started together: compute time at each N (default: the smallest run's)",
    )


def dispatch(args: argparse.Namespace, overrides: list[str], argv: Sequence[str]) -> int:
    if args.command == "submit":
        return cmd_submit(args, overrides)
    if args.command == "sweep":
        return cmd_sweep(args, overrides)
    if args.command == "allreduce":
        return cmd_allreduce(args, argv)
    if args.command == "report":
        return cmd_report(args)
    if args.command == "predict":
        return cmd_predict(args)
    raise UsageError(f"unknown command {args.command!r}")


# ---------------------------------------------------------------------------------------
# submit


def script_for(mode: str, launcher: str) -> Path:
    """The sbatch script of a mode: Horovod by srun+PMI or mpirun; any other mode by srun
    with roles from SLURM_PROCID."""
    if mode == "horovod":
        return SLURM_DIR / f"horovod_{launcher}.sbatch"
    return SLURM_DIR / "ps_srun.sbatch"


def job_tasks(cfg: config.Config) -> int:
    """Tasks the job must start: the mode's world for ``launch.np`` (a ps mode's np +
    num_ps), or 0 to take the allocation's nodes x tasks per node (``launch.np = 0``)."""
    from hvdbench.launch.job import JobLayout

    return JobLayout.plan(cfg).world_size if cfg.launch.np else 0


def cmd_submit(args: argparse.Namespace, overrides: list[str]) -> int:
    from hvdbench.launch.job import JobLayout

    cfg = config.load(args.config, overrides)
    ntasks = job_tasks(cfg)
    req = slurm.JobRequest(
        nodes=args.nodes,
        ntasks_per_node=args.ntasks_per_node,
        partition=args.partition,
        time=args.time,
        account=args.account,
        job_name=args.job_name or f"hvdbench-{cfg.mode.name}-{cfg.model.name}",
        signal=args.signal,
        ntasks=ntasks,
        **sbatch_options(args),
    )
    if ntasks > req.capacity:
        raise UsageError(
            f"--nodes {req.nodes} x --ntasks-per-node {req.ntasks_per_node} holds "
            f"{req.capacity} task(s), but mode {cfg.mode.name} with launch.np={cfg.launch.np} "
            f"needs {JobLayout.plan(cfg).formula()} = {ntasks}; raise --nodes or "
            "--ntasks-per-node"
        )
    slurm.validate_request(req)
    script = Path(args.script) if args.script else script_for(cfg.mode.name, args.launcher)
    if not script.is_file():
        raise UsageError(f"--script: '{script}' does not exist")
    cmd = slurm.sbatch_command(req, str(script), [os.path.abspath(args.config), *overrides])
    if args.dry_run:
        print(shlex.join(cmd))
        print(f"# --- {script}")
        print(script.read_text(), end="")
        return 0
    job = slurm.submit(cmd, _submit_env())
    print(f"hvdbench: submitted job {job}: {shlex.join(cmd)}")
    return 0


def _submit_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HVDBENCH_PYTHON", sys.executable)
    return env


# ---------------------------------------------------------------------------------------
# sweep


def cmd_sweep(args: argparse.Namespace, overrides: list[str]) -> int:
    from hvdbench.launch import launcher
    from hvdbench.study import sweep

    if args.repeats < 1:
        raise UsageError(f"--repeats: must be >= 1, got {args.repeats}")
    ranks = sweep.parse_ranks(args.ranks)
    if args.modes:
        modes = sweep.parse_modes(args.modes)
    else:
        modes = [config.load(args.config, overrides).mode.name]
    resets = sweep.unread_resets(args.config, overrides, modes)
    points = sweep.plan(ranks, modes, args.repeats)
    cfgs = {
        (p.mode, p.ranks): sweep.point_config(
            args.config, p, args.launcher, [*overrides, *resets[p.mode]]
        )
        for p in points
    }
    base = cfgs[(points[0].mode, points[0].ranks)]
    worlds = {k: sweep.world_size(c) for k, c in cfgs.items()}
    study = Path(args.study)
    print(
        f"hvdbench sweep: {len(points)} point(s), modes {','.join(modes)}, ranks "
        f"{','.join(map(str, ranks))}, {args.repeats} repeat(s); per-device batch "
        f"{base.train.per_device_batch_size} (global batch = {base.train.per_device_batch_size}"
        f" x ranks); records in {study}",
        flush=True,
    )
    for mode, keys in resets.items():
        if keys:
            print(
                f"hvdbench sweep: {mode} points run with {' '.join(keys)} (defaults): "
                f"mode {mode} does not read the study's value",
                flush=True,
            )

    if args.launcher == "slurm" and not slurm.in_allocation(os.environ):
        return _submit_sweep(args, overrides, points, worlds)

    failed = 0
    for i, p in enumerate(points, 1):
        cfg, world = cfgs[(p.mode, p.ranks)], worlds[(p.mode, p.ranks)]
        argv = sweep.run_argv(args.config, p, str(study), [*overrides, *resets[p.mode]])
        rank_cmd = launcher.rank_command(argv)
        if args.launcher == "slurm":
            cmd = slurm.srun_command(world, rank_cmd, mpi=os.environ.get("HVDBENCH_PMI", "pmix"))
            env = sweep.point_env(os.environ, p, launched=False)
        else:
            cmd = sweep.local_command(cfg, world, rank_cmd)
            env = sweep.point_env(os.environ, p, launched=world > 1)
        if args.dry_run:
            print(shlex.join(cmd))
            continue
        study.mkdir(parents=True, exist_ok=True)
        print(f"[{i}/{len(points)}] {p.label} ({world} processes) ...", end=" ", flush=True)
        rc, failed_rec = sweep.run_point(cmd, p, cfg.model.name, study, env, args.point_timeout)
        if failed_rec is not None:
            failed += 1
            print(f"FAILED ({'timeout' if rc is None else f'exit {rc}'}): {failed_rec}", flush=True)
        elif rc != 0:
            failed += 1
            why = "timed out" if rc is None else f"exit {rc}"
            print(f"{why}; its own record (incomplete) is kept", flush=True)
        else:
            print("ok", flush=True)
    if not args.dry_run:
        print(
            f"hvdbench sweep: {len(points) - failed} of {len(points)} point(s) completed; "
            f"{failed} failed or stopped early. `hvdbench report {study}` shows the table."
        )
    return 1 if failed else 0


def _submit_sweep(
    args: argparse.Namespace,
    overrides: list[str],
    points: list[Any],
    worlds: dict[tuple[str, int], int],
) -> int:
    from hvdbench.study import sweep

    if args.ntasks_per_node < 1:
        raise UsageError("--ntasks-per-node: needed with --launcher slurm outside a job")
    study = Path(args.study)
    logs = study / "logs"
    groups: list[list[Any]]
    if args.slurm_jobs == "packed":
        groups = [points]
    else:
        by_point: dict[tuple[str, int], list[Any]] = {}
        for p in points:
            by_point.setdefault((p.mode, p.ranks), []).append(p)
        groups = list(by_point.values())
    for group in groups:
        world = max(worlds[(p.mode, p.ranks)] for p in group)
        req = slurm.JobRequest(
            nodes=sweep.slurm_nodes(world, args.ntasks_per_node),
            ntasks_per_node=args.ntasks_per_node,
            partition=args.partition,
            time=args.time,
            account=args.account,
            job_name=sweep.job_name(group),
            signal="",
            output=str(logs.resolve() / "slurm-%j.out"),
            **sbatch_options(args),
        )
        slurm.validate_request(req)
        inner = sweep.inner_sweep_argv(
            args.config,
            sorted({p.ranks for p in group}),
            list(dict.fromkeys(p.mode for p in group)),
            max(p.repeat for p in group) + 1,
            str(study),
            overrides,
            args.point_timeout,
        )
        cmd = slurm.sbatch_command(req, wrap=inner)
        if args.dry_run:
            print(shlex.join(cmd))
            continue
        logs.mkdir(parents=True, exist_ok=True)
        job = slurm.submit(cmd, os.environ)
        print(f"hvdbench sweep: submitted job {job} ({len(group)} point(s), {world} tasks)")
    return 0


# ---------------------------------------------------------------------------------------
# allreduce


def cmd_allreduce(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from hvdbench.launch import launcher, netinfo, topology
    from hvdbench.study import allreduce

    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    for i in impls:
        if i not in allreduce.IMPLEMENTATIONS:
            raise UsageError(f"--impl: {i!r} is not one of: {', '.join(allreduce.IMPLEMENTATIONS)}")
    if args.warmup < 0 or args.iters < 1:
        raise UsageError("--iters must be >= 1 and --warmup >= 0")
    budget = allreduce.parse_size(args.max_bytes_per_size)
    if args.model:
        if args.model not in config.MODEL_NAMES:
            raise UsageError(
                f"--model: {args.model!r} is not one of: {', '.join(config.MODEL_NAMES)}"
            )
    else:
        sizes = allreduce.parse_sizes(args.sizes, args.factor)

    topo = topology.detect(os.environ)
    inner = launcher.inside_launcher(topo, os.environ)
    if not inner and args.np > 1:
        rank_argv = [a for a in argv if a != "--dry-run"]
        rank_cmd = launcher.rank_command(rank_argv)
        cmd = launcher.launcher_command(
            args.launcher, args.np, rank_cmd, controller=args.horovodrun_controller
        )
        if args.dry_run:
            print(shlex.join(cmd))
            return 0
        return launcher.execute(cmd, launcher.launch_env(os.environ, os.geteuid() == 0))
    if args.dry_run:
        print(shlex.join(launcher.rank_command([a for a in argv if a != "--dry-run"])))
        return 0
    if args.model:
        sizes = allreduce.model_gradient_sizes(args.model)
    if netinfo.own_gloo_rendezvous(args.srun_controller, topo):
        _rendezvous = netinfo.join_gloo_rendezvous(os.environ, 0, 60.0)  # serves while held
    results, facts, chief = allreduce.run_rank(sizes, impls, args.warmup, args.iters, budget)
    if chief:
        n = int(facts["world_size"])
        print(allreduce.table(results, n), flush=True)
        for impl, info in facts["implementations"].items():
            if isinstance(info, str):
                print(f"# {impl}: {info}")
        path = allreduce.write(args.output, results, facts, list(argv))
        print(f"hvdbench: record written to {path}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# report and predict


def cmd_report(args: argparse.Namespace) -> int:
    from hvdbench.study import records, report

    tol = report.parse_tolerance(args.tolerance)
    recs = records.load(args.study)
    rows = report.summarize(recs)
    if not rows:
        raise UsageError(f"report: no benchmark records in '{args.study}'")
    batches = {r.per_device_batch_size for r in rows if r.per_device_batch_size}
    print(report.markdown(rows))
    if len(batches) > 1:
        print(
            f"\nwarning: per-device batch differs between points ({sorted(batches)}): "
            "this is not a weak-scaling study"
        )
    lines = report.failures(recs)
    if lines:
        print("\nRuns not in the medians:")
        print("\n".join(lines))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        Path(args.csv).write_text(report.to_csv(rows))
        print(f"\nCSV written to {args.csv}")
    if args.plot:
        from hvdbench.study import plot

        plot.efficiency_plot(rows, args.plot, title=f"Weak scaling: {args.study}")
        print(f"plot written to {args.plot}")
    if args.baseline:
        base_rows = report.summarize(records.load(args.baseline))
        comps = report.compare(rows, base_rows, tol)
        print()
        print(report.comparison_markdown(comps, tol))
        bad = [c for c in comps if c.regressed]
        if bad:
            print(f"\n{len(bad)} point(s) below the baseline by more than {tol * 100:g}%")
            return 1
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hvdbench.study import model, overlap, records, report, sweep

    ranks = sweep.parse_ranks(args.ranks)
    recs = records.load(args.study)
    ar_recs: list[dict[str, Any]] = []
    for src in args.allreduce or [args.study]:
        p = Path(src)
        if p.is_dir():
            ar_recs += records.load(p)
        elif p.is_file():
            import json

            ar_recs.append(json.loads(p.read_text()))
        else:
            raise UsageError(f"--allreduce: '{src}' does not exist")
    samples = model.allreduce_samples(ar_recs, args.impl)
    if not samples:
        raise UsageError(
            "predict: no all-reduce record found; run `hvdbench allreduce --np N "
            "--output STUDY_DIR` or pass --allreduce RECORD"
        )
    fit = model.fit_ring(samples)
    compute = _compute_times(args.compute) if args.compute else None
    if compute is not None:
        print(
            "Compute per step from one-rank runs started together: "
            + ", ".join(f"{n}: {t * 1e3:.2f} ms" for n, t in sorted(compute.items()))
        )
    rows = report.summarize(recs)
    complete = [r for r in records.benchmarks(recs) if r.get("status") == "complete"]
    if not complete:
        raise UsageError(f"predict: no complete benchmark record in '{args.study}'")
    predicted: dict[str, list[tuple[int, float]]] = {}
    out: list[Any] = []
    sizes: dict[str, float] = {}
    for mode in sorted({r.mode for r in rows if r.repeats}):
        sample = next(r for r in complete if r.get("mode") == mode)
        profile, knobs = None, None
        if mode in overlap.OVERLAPPING_MODES:
            profile = model.gradient_profile(sample["config"])
            knobs = overlap.Knobs.from_config(sample["config"])
            print(overlap.describe(mode, profile, knobs))
            size = args.gradient_bytes or sum(b for b, _ in profile)
        else:
            size = args.gradient_bytes or model.gradient_bytes(sample["config"])
        sizes[mode] = size
        num_ps = args.num_ps or model.num_ps_from_config(sample["config"])
        measured = {
            r.ranks: ((r.step_time_median_ms or 0) / 1000, r.scaling_efficiency)
            for r in rows
            if r.mode == mode and r.repeats and r.step_time_median_ms
        }
        preds = model.predict(mode, measured, ranks, size, fit, num_ps, compute, profile, knobs)
        out += preds
        partial = [(p.ranks, p.efficiency_partial) for p in preds if p.efficiency_partial]
        no_overlap = f"{mode}, no overlap" if partial else mode
        predicted[no_overlap] = [(p.ranks, p.efficiency_no_overlap) for p in preds]
        if partial:
            predicted[f"{mode}, partial overlap"] = partial
    print(model.markdown(out, fit, sizes))
    if args.plot:
        from hvdbench.study import plot

        plot.efficiency_plot(rows, args.plot, title=f"Weak scaling and model: {args.study}",
                             predicted=predicted)  # fmt: skip
        print(f"plot written to {args.plot}")
    return 0


def _compute_times(folder: str) -> dict[int, float]:
    """``--compute DIR``: DIR/nN/ holds the records of N one-rank runs started together."""
    import re

    from hvdbench.study import model, records

    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"--compute: folder '{folder}' does not exist")
    by_n = {}
    for sub in root.iterdir():
        m = re.fullmatch(r"n(\d+)", sub.name)
        if m and sub.is_dir():
            by_n[int(m.group(1))] = records.benchmarks(records.load(sub))
    times = model.compute_times(by_n)
    if not times:
        raise UsageError(f"--compute: no complete record under '{folder}'/nN/")
    return times
