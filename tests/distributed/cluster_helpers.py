"""Helpers of the cluster tests: leftover processes and the one record of a run."""

from __future__ import annotations

import json
import os
from pathlib import Path


def leftover(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def one_record(out: Path) -> dict:
    records = sorted(out.glob("*.json"))
    assert len(records) == 1, records
    return json.loads(records[0].read_text())
