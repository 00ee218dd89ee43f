"""Reading a study folder: the records of runs, failed points and all-reduce benchmarks."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hvdbench.components import record
from hvdbench.errors import UsageError

BENCHMARK = "benchmark"
ALLREDUCE = "allreduce"


def kind(rec: Mapping[str, Any]) -> str:
    """``benchmark`` (a run of ``hvdbench run``, or a failed sweep point) or ``allreduce``."""
    return str(rec.get("kind", BENCHMARK))


def load(study: str | Path) -> list[dict[str, Any]]:
    """Every record in ``study`` (not recursive), in file-name order; other JSON is ignored."""
    path = Path(study)
    if not path.is_dir():
        raise UsageError(f"study folder '{study}' does not exist")
    out: list[dict[str, Any]] = []
    for p in sorted(path.glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "schema_version" in data and "status" in data:
            data["_path"] = str(p)
            out.append(data)
    return out


def num_ranks(rec: Mapping[str, Any]) -> int:
    """Compute ranks of a run: its totals, else the topology, else a failed point's plan."""
    totals = rec.get("totals") or {}
    if totals.get("num_ranks"):
        return int(totals["num_ranks"])
    if rec.get("ranks"):
        return int(rec["ranks"])
    per_rank = rec.get("per_rank") or []
    if per_rank:  # a local-device process counts its devices
        return sum(int(p.get("devices", 1)) for p in per_rank)
    return int((rec.get("topology") or {}).get("world_size") or 0)


def benchmarks(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if kind(r) == BENCHMARK]


def failed_point_record(
    *,
    mode: str,
    model: str,
    ranks: int,
    repeat: int,
    command: Sequence[str],
    returncode: int | None,
    error: str,
    log: str = "",
) -> dict[str, Any]:
    """The record of a sweep point that produced no record of its own."""
    return {
        "schema_version": record.RECORD_SCHEMA_VERSION,
        "kind": BENCHMARK,
        "status": "failed",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": mode,
        "model": model,
        "ranks": ranks,
        "repeat": repeat,
        "command_line": list(command),
        "returncode": returncode,
        "error": error,
        "log": log,
        "totals": None,
    }
