"""The weak-scaling sweep: the same config at several rank counts, modes and repeats.

The per-device batch comes from the config and is never changed by the sweep, so the global
batch grows with the ranks (weak scaling). Points run one after another:

* locally, each point through ``horovodrun`` or ``mpirun`` (the launcher starts the mode's
  whole world: compute ranks plus any parameter-server tasks);
* inside a Slurm allocation, each point as one ``srun`` step no bigger than it needs;
* from a login node, ``--launcher slurm`` submits either one job packing every point as
  ``srun`` steps of an allocation of the largest size, or one job per point. Each job runs
  this same sweep inside its allocation.

Every point leaves a record in the study folder: the run's own, or a ``failed`` record
with the error and the end of its log when the run wrote none.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hvdbench import config
from hvdbench.components import record
from hvdbench.errors import UsageError
from hvdbench.launch.job import JobLayout
from hvdbench.launch.launcher import LAUNCHED, launch_command
from hvdbench.study import records

LAUNCHERS = ("auto", "horovodrun", "mpirun", "slurm")
TERM_GRACE_SECONDS = 10.0
SLURM_JOBS = ("packed", "per-point")


@dataclass(frozen=True)
class Point:
    """One run of the sweep."""

    mode: str
    ranks: int
    repeat: int

    @property
    def label(self) -> str:
        return f"{self.mode}-n{self.ranks}-r{self.repeat}"


def parse_ranks(text: str) -> list[int]:
    """``1,2,4`` -> ``[1, 2, 4]``: positive, distinct, sorted."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"--ranks: {part!r} is not a positive integer; expected e.g. 1,2,4,8")
        values.append(int(part))
    return sorted(set(values))


def parse_modes(text: str, known: Sequence[str] = config.MODE_NAMES) -> list[str]:
    """``horovod,parameter_server`` -> names, each one the config schema accepts."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    for m in names:
        if m not in known:
            raise UsageError(f"--modes: {m!r} is not one of: {', '.join(known)}")
    if not names:
        raise UsageError(f"--modes: no mode given; choose from: {', '.join(known)}")
    return list(dict.fromkeys(names))


def plan(ranks: Sequence[int], modes: Sequence[str], repeats: int) -> list[Point]:
    """Points in run order: repeats outermost, so slow drift of the machine spreads over
    every point instead of biasing the last ones."""
    return [Point(m, n, r) for r in range(repeats) for m in modes for n in ranks]


def _override_text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def unread_resets(
    config_path: str | None, overrides: Sequence[str], modes: Sequence[str]
) -> dict[str, list[str]]:
    """Per mode, the overrides that put back to their defaults the study's mode-specific
    settings that mode does not read (``ps.*`` for ``horovod`` points, say), so that one
    study can set each mode's own keys. A setting no mode of the study reads is left in
    place, for the point's config to refuse."""
    unread = {
        m: config.unread_settings(
            config.merged_values(config_path, [*overrides, f"--mode.name={m}"])
        )
        for m in modes
    }
    everywhere = set.intersection(*({k for k, *_ in u} for u in unread.values()))
    return {
        m: [f"--{k}={_override_text(d)}" for k, _, d, _ in u if k not in everywhere]
        for m, u in unread.items()
    }


def run_argv(
    config_path: str | None, point: Point, study: str, overrides: Sequence[str]
) -> list[str]:
    """``hvdbench run`` arguments of one point (what every rank runs)."""
    argv = ["run"]
    if config_path:
        argv.append(config_path)
    return [
        *argv,
        *overrides,
        f"--mode.name={point.mode}",
        f"--launch.np={point.ranks}",
        f"--output.dir={study}",
    ]


def point_env(env: Mapping[str, str], point: Point, launched: bool) -> dict[str, str]:
    """The point's environment: tagged (captured in its record) and, for ranks already
    started by a launcher, marked so that hvdbench does not launch again."""
    out = dict(env)
    out["HVDBENCH_STUDY_POINT"] = f"mode={point.mode},ranks={point.ranks},repeat={point.repeat}"
    if launched:
        out[LAUNCHED] = "1"
    if os.geteuid() == 0:
        out.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        out.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return out


def local_command(cfg: config.Config, world: int, rank_cmd: list[str]) -> list[str]:
    """One process when the point needs one, else the configured launcher for ``world``."""
    if world <= 1:
        return rank_cmd
    return launch_command(cfg, world, rank_cmd)


def point_config(
    config_path: str | None, point: Point, launcher: str, overrides: Sequence[str]
) -> config.Config:
    extra = [f"--mode.name={point.mode}", f"--launch.np={point.ranks}"]
    if launcher in ("horovodrun", "mpirun"):
        extra.append(f"--launch.launcher={launcher}")
    return config.load(config_path, [*overrides, *extra])


def world_size(cfg: config.Config) -> int:
    """Processes the point needs: the mode's compute ranks plus its other tasks."""
    return JobLayout.plan(cfg).world_size


def _new_records(study: Path, before: set[str]) -> list[Path]:
    return sorted(p for p in study.glob("*.json") if p.name not in before)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_point(
    cmd: Sequence[str],
    point: Point,
    model: str,
    study: Path,
    env: Mapping[str, str],
    timeout: float,
) -> tuple[int | None, Path | None]:
    """Run one point to completion (or its timeout), log it, and make sure it left a record.

    Returns the exit code (None on timeout) and the failed-point record written, if any.
    On timeout the point gets SIGTERM first, so it may still stop at an agreed step and
    write its own record marked incomplete; only a point that wrote nothing gets a
    ``failed`` record.
    """
    logs = study / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{point.label}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.log"
    before = {p.name for p in study.glob("*.json")}
    error = ""
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True
        )
        rc: int | None
        try:
            rc = proc.wait(timeout=timeout if timeout > 0 else None)
        except subprocess.TimeoutExpired:
            rc = None
            error = f"timed out after {timeout:g} s"
            _terminate(proc)
        except KeyboardInterrupt:
            _kill(proc)
            raise
        finally:
            _kill(proc)
            if proc.poll() is None:
                proc.wait()
    new = _new_records(study, before)
    if new:  # its own record: complete, or incomplete after a stop (a signal, the timeout)
        return rc, None
    text = log_path.read_text(errors="replace")
    if not error:
        error = f"exit code {rc}" if rc != 0 else "exited 0 but wrote no record"
        last = [ln for ln in text.splitlines() if "error" in ln.lower()]
        if last:
            error += f": {last[-1].strip()}"
    rec = records.failed_point_record(
        mode=point.mode,
        model=model,
        ranks=point.ranks,
        repeat=point.repeat,
        command=cmd,
        returncode=rc,
        error=error,
        log=_tail(text),
    )
    rec["log_file"] = str(log_path)
    name = record.record_name(point.mode, f"{model}-failed", point.ranks)
    return rc, record.write_atomic(study / name, rec)


def _terminate(proc: subprocess.Popen[bytes], grace: float = TERM_GRACE_SECONDS) -> None:
    """SIGTERM first: srun then cancels its step cleanly and ranks may stop at an agreed
    step; SIGKILL (by the caller) after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------
# Slurm


def slurm_nodes(world: int, ntasks_per_node: int) -> int:
    return max(1, math.ceil(world / ntasks_per_node))


def inner_sweep_argv(
    config_path: str | None,
    ranks: Sequence[int],
    modes: Sequence[str],
    repeats: int,
    study: str,
    overrides: Sequence[str],
    point_timeout: float,
    python: str = sys.executable,
) -> list[str]:
    """The sweep that a Slurm job runs inside its allocation (points as ``srun`` steps)."""
    cmd = [python, "-m", "hvdbench", "sweep"]
    if config_path:
        cmd.append(os.path.abspath(config_path))
    cmd += [
        f"--ranks={','.join(map(str, ranks))}",
        f"--modes={','.join(modes)}",
        f"--repeats={repeats}",
        "--launcher=slurm",
        f"--study={os.path.abspath(study)}",
        f"--point-timeout={point_timeout:g}",
    ]
    return cmd + list(overrides)


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def job_name(points: Sequence[Point]) -> str:
    modes = sorted({p.mode for p in points})
    ranks = sorted({p.ranks for p in points})
    name = f"hvdbench-sweep-{'+'.join(modes)}-n{'_'.join(map(str, ranks))}"
    return _SAFE.sub("_", name)[:100]
