"""``hvdbench``: the command line. Subcommands parse, validate and hand over; no logic here.

Bad input of any kind ends in one line on stderr and exit code 2, before TensorFlow is
imported and before anything is written.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from hvdbench import config, tfconfig
from hvdbench.errors import ClusterError, DownloadError, UsageError
from hvdbench.launch import preflight, topology
from hvdbench.launch.job import JobLayout
from hvdbench.study import commands as study_commands

DESCRIPTION = """\
Benchmark and training harness for distributed TensorFlow: Horovod ring all-reduce,
with synthetic data, reporting images/sec measured across ranks.

Configuration: hvdbench/configs/default.toml < CONFIG file < --section.key=value overrides.
`hvdbench config keys` documents every key."""

RUN_EPILOG = """\
examples:
  hvdbench run --np 2                                 2 ranks on this machine (mpirun: launch.launcher=auto)
  hvdbench run my.toml --train.num_steps=50           a config file plus an override
  hvdbench run --np 2 --launch.launcher=horovodrun    the same through horovodrun --gloo
  mpirun -np 4 hvdbench run my.toml                   inside a launcher: ranks come from it
  hvdbench run --np 2 --dry-run                       print the launcher command only
  hvdbench run --mode.name=parameter_server --np 2    1 ps + 2 workers on loopback (gRPC)
  mpirun -np 3 hvdbench run --mode.name=parameter_server   roles from ranks: rank 0 is the ps
"""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hvdbench",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--version", action="version", version=f"hvdbench {__import__('hvdbench').__version__}"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run a benchmark (launching ranks itself when --np > 1)",
        description="Run a benchmark. Any --section.key=value argument overrides the config.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", nargs="?", help="TOML config file (default: the embedded defaults)")
    run.add_argument("--np", type=int, help="compute ranks; shorthand for --launch.np=N")
    run.add_argument("--dry-run", action="store_true", help="print the launcher command and exit")

    cfg = sub.add_parser("config", help="show the resolved config or document its keys")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    cfg_sub.required = True
    pr = cfg_sub.add_parser("print", help="print the resolved config as TOML")
    pr.add_argument("config", nargs="?", help="TOML config file")
    cfg_sub.add_parser("keys", help="document every key: type, default, meaning")

    sub.add_parser("models", help="list the models and their native input sizes")
    sub.add_parser("modes", help="what each mode supports: the capability matrix")

    tp = sub.add_parser(
        "topology",
        help="print what this process believes: rank, size, local rank, CPUs, GPU",
        description="Print this process's place in the job as the benchmark would take it: "
        "rank, size and local rank from the launcher's variables, the CPUs it binds to (and "
        "whether the launcher or hvdbench chose them) and its GPU. Run it under the launcher: "
        "mpiexec -n 2 hvdbench topology, srun hvdbench topology. Takes the run's config and "
        "overrides (runtime.bind_cores, mode.name).",
    )
    tp.add_argument("config", nargs="?", help="TOML config file (default: the embedded defaults)")
    tp.add_argument("--json", action="store_true", help="one JSON object per process")

    ev = sub.add_parser(
        "eval",
        help="restore the latest checkpoint and report top-1/top-5 accuracy on the eval split",
        description="Evaluate the newest readable checkpoint in checkpoint.dir on the "
        "evaluation split of data.source, in one process. Takes the config and overrides "
        "of the training run, e.g. hvdbench eval --data.source=cifar10 --data.dir=D "
        "--checkpoint.dir=C --model.name=cifar10_cnn",
    )
    ev.add_argument("config", nargs="?", help="TOML config file (default: the embedded defaults)")

    data = sub.add_parser("data", help="download and check a data set")
    data.add_argument("dataset", choices=["cifar10"], help="the data set")
    data.add_argument("--dest", required=True, help="directory to put cifar-10-batches-bin in")
    data.add_argument("--url", help="archive URL (default: the official CIFAR-10 binary archive)")
    data.add_argument("--md5", help="expected MD5 of the archive (default: the official archive's)")
    data.add_argument(
        "--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)"
    )

    cb = sub.add_parser(
        "check-build",
        help="check that Horovod was built with the frameworks and controllers needed",
    )
    cb.add_argument(
        "--require",
        default="TensorFlow,MPI,Gloo",
        help="comma-separated features that must be [X] (default: TensorFlow,MPI,Gloo)",
    )
    study_commands.add_parsers(sub)
    return p


def _load(args: argparse.Namespace, overrides: list[str]) -> config.Config:
    if getattr(args, "np", None) is not None:
        overrides = [*overrides, f"--launch.np={args.np}"]
    return config.load(args.config, overrides)


def cmd_run(args: argparse.Namespace, overrides: list[str], argv: Sequence[str]) -> int:
    from hvdbench.launch import launcher

    cfg = _load(args, overrides)
    if cfg.mode.name in config.GRPC_MODES and tfconfig.is_evaluator(os.environ):
        print(
            "hvdbench: TF_CONFIG task is an evaluator, which has no part in a benchmark run; "
            "nothing to do",
            file=sys.stderr,
        )
        return 0
    check_data(cfg, training=True)
    topo = topology.detect(os.environ)
    inner = launcher.inside_launcher(topo, os.environ)
    preflight.check_directories(cfg)
    preflight.check_memory(cfg, ranks_on_node(cfg, topo))
    if not args.dry_run:
        preflight.check_libraries(cfg)
    if not inner:
        from hvdbench import modes

        task_argv = [a for a in argv if a != "--dry-run"]
        code = modes.get(cfg.mode.name).launch_local(cfg, task_argv, args.dry_run)
        if code is not None:
            return code
    if not inner and cfg.launch.np > 1:
        np = JobLayout.plan(cfg).world_size
        rank_argv = [a for a in argv if a != "--dry-run"]
        cmd = launcher.launch_command(cfg, np, launcher.rank_command(rank_argv))
        if args.dry_run:
            print(" ".join(cmd))
            return 0
        return launcher.execute(
            cmd, launcher.launch_env(os.environ, os.geteuid() == 0), rank_roles(cfg, np)
        )
    if args.dry_run:
        print(" ".join(launcher.rank_command([a for a in argv if a != "--dry-run"])))
        return 0
    from hvdbench.run.benchmark import run_rank

    return run_rank(cfg, topo, list(argv))


def ranks_on_node(cfg: config.Config, topo: topology.Topology) -> int:
    """The processes of this job on this node: the launcher's local size, or the ranks
    hvdbench will start here itself."""
    if topo.launched:
        return topo.local_size
    return 1 if cfg.launch.hosts else max(1, cfg.launch.np)


def rank_roles(cfg: config.Config, size: int) -> Callable[[int], str] | None:
    """What a rank is in a job whose ranks are not all alike (ps modes under mpirun), for
    the message naming a lost rank; None where every rank is a worker."""
    layout = JobLayout.plan(cfg).launched_as(size)
    if not layout.num_ps:
        return None

    def role(rank: int) -> str:
        r = layout.role(rank)
        what = f"{r.job} task {r.index}"
        if r.is_ps:
            return (
                f"{what} (under mpirun a lost ps task is not restarted: resubmit the job; "
                "with checkpoint.dir it resumes from the newest checkpoint)"
            )
        return what + (" (the chief)" if r.index == 0 else "")

    return role


def check_data(cfg: config.Config, training: bool) -> None:
    """A missing or malformed data directory fails here, in one line, before any launch."""
    from hvdbench.data import layout

    layout.files(cfg.data.source, cfg.data.dir, training)


def cmd_config(args: argparse.Namespace, overrides: list[str]) -> int:
    if args.config_command == "keys":
        print(config.describe())
        return 0
    print(config.to_toml(config.load(args.config, overrides)), end="")
    return 0


def cmd_eval(args: argparse.Namespace, overrides: list[str], argv: Sequence[str]) -> int:
    cfg = _load(args, overrides)
    check_data(cfg, training=False)
    preflight.check_directories(cfg)
    preflight.check_memory(cfg, 1)
    from hvdbench.run.evaluate import evaluate

    return evaluate(cfg, topology.detect(os.environ), list(argv))


def cmd_data(args: argparse.Namespace) -> int:
    from hvdbench.data import download

    preflight.check_writable("--dest", args.dest)
    topo = topology.detect(os.environ)
    try:
        path = download.cifar10_distributed(
            args.dest,
            args.url or download.CIFAR10_URL,
            args.md5 or download.CIFAR10_MD5,
            args.timeout,
            topo.rank,
            topo.size if topo.launched else 1,
        )
    except DownloadError as e:
        print(f"hvdbench: error: {e}", file=sys.stderr)
        return 1
    if not topo.launched or topo.rank == 0:
        print(f"hvdbench: CIFAR-10 binary batches ready in {path}")
    return 0


def cmd_topology(args: argparse.Namespace, overrides: list[str]) -> int:
    import json

    from hvdbench.components import runtime

    cfg = config.load(args.config, overrides)
    topo = topology.detect(os.environ)
    slot = JobLayout.plan(cfg).core_slot(topo.rank, topo.local_rank, topo.local_size)
    binding = runtime.bind(cfg, topo, slot)
    from hvdbench.launch.cputopo import format_cpulist

    report = {
        "rank": topo.rank,
        "size": topo.size,
        "local_rank": topo.local_rank,
        "local_size": topo.local_size,
        "source": topo.source,
        "host": topo.hostname,
        "cpus": list(binding.cpus),
        "binding": binding.how,
        "gpu": runtime.gpu_index(topo, runtime.count_gpus(os.environ)),
    }
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        gpu = "none" if report["gpu"] is None else report["gpu"]
        print(
            f"rank {topo.rank} of {topo.size}, local rank {topo.local_rank} of "
            f"{topo.local_size} ({topo.source}) on {topo.hostname}: cpus "
            f"{format_cpulist(binding.cpus)} (binding: {binding.how}), gpu {gpu}",
            flush=True,
        )
    return 0


def cmd_models() -> int:
    from hvdbench.models.specs import MODEL_SPECS

    print(f"{'name':<12} {'input':>11} {'classes':>7}  description")
    for name, s in MODEL_SPECS.items():
        shape = f"{s.image_size}x{s.image_size}x{s.channels}"
        print(f"{name:<12} {shape:>11} {s.num_classes:>7}  {s.description}")
    return 0


def cmd_modes() -> int:
    """The capability matrix, as the README shows it (no TensorFlow needed)."""
    from hvdbench import modes
    from hvdbench.modes.capabilities import matrix

    print(matrix(modes.declared()), end="")
    return 0


def cmd_check_build(args: argparse.Namespace) -> int:
    from hvdbench.launch import buildcheck

    required = [r.strip() for r in args.require.split(",") if r.strip()]
    report = buildcheck.run_check_build()
    missing = buildcheck.missing_features(report, required)
    if missing:
        raise UsageError(buildcheck.rebuild_message(missing))
    print(f"Horovod build has: {', '.join(required)}")
    return 0


def whole_lines(*streams: TextIO) -> None:
    """Make each line printed to these streams reach the OS in one write, newline included.

    Several ranks under one launcher share its output, and the launcher forwards whatever
    each write held. With PYTHONUNBUFFERED set (write-through), `print` writes a line and its
    newline in two calls, so another rank's line could land between them and two JSON reports
    arrived joined on one line. Line buffering keeps every line whole and still shows it at
    once; a line longer than the pipe's atomic size (4 KiB) may still be split by the OS."""
    for stream in streams:
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input, with a one-line message)."""
    if argv is None:  # a process of its own (not a test calling in): whole lines out
        whole_lines(sys.stdout, sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    try:
        rest, overrides = config.split_overrides(argv)
        try:
            args = _parser().parse_args(rest)
        except SystemExit as e:  # --help, --version, or argparse's one-line error
            return e.code if isinstance(e.code, int) else 2
        if overrides and args.command not in (
            "run",
            "config",
            "eval",
            "topology",
            *study_commands.TAKES_OVERRIDES,
        ):
            raise UsageError(f"'{args.command}' takes no config overrides, got {overrides[0]}")
        if args.command == "run":
            return cmd_run(args, overrides, argv)
        if args.command == "config":
            return cmd_config(args, overrides)
        if args.command == "models":
            return cmd_models()
        if args.command == "topology":
            return cmd_topology(args, overrides)
        if args.command == "modes":
            return cmd_modes()
        if args.command == "eval":
            return cmd_eval(args, overrides, argv)
        if args.command == "data":
            return cmd_data(args)
        if args.command == "check-build":
            return cmd_check_build(args)
        if args.command in study_commands.COMMANDS:
            return study_commands.dispatch(args, overrides, argv)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as e:
        print(f"hvdbench: error: {e}", file=sys.stderr)
        return 2
    except ClusterError as e:
        print(f"hvdbench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hvdbench: interrupted", file=sys.stderr)
        return 130
