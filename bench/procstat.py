"""Where a job's CPU time goes: per thread, user against system, and context switches.

Runs a command, waits ``--delay`` seconds (start-up and warm-up), then reads every thread of
every process in the command's process tree from ``/proc`` at the start and at the end of a
``--window`` of seconds, and prints, per process and thread name, the CPU used in the window
(user and system, as a share of one core), the voluntary and involuntary context switches
per second, and the machine-wide split of ``/proc/stat`` (user, system, idle, steal).

    python bench/procstat.py --delay 25 --window 15 -- hvdbench run --np 2 ...

A benchmark tool, not a test. Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """pid and all its descendants, from /proc/<pid>/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def threads(pids: list[int]) -> dict[tuple[int, int], dict[str, float | str]]:
    """(pid, tid) -> comm of process and thread, utime, stime (s), voluntary/involuntary
    context switches."""
    got: dict[tuple[int, int], dict[str, float | str]] = {}
    for pid in pids:
        try:
            pcomm = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            pname = " ".join(a.decode(errors="replace") for a in pcomm[:4])[:60]
        except OSError:
            continue
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
                status = (task / "status").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            sw = {
                k: float(v)
                for k, v in (line.split(":\t") for line in status.splitlines() if ":\t" in line)
                if k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
            }
            got[(pid, int(task.name))] = {
                "process": pname,
                "thread": comm,
                "utime": int(fields[11]) / TICK,
                "stime": int(fields[12]) / TICK,
                "vol": sw.get("voluntary_ctxt_switches", 0.0),
                "invol": sw.get("nonvoluntary_ctxt_switches", 0.0),
            }
    return got


def proc_stat() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--delay", type=float, default=20.0)
    p.add_argument("--window", type=float, default=15.0)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("no command given")
    proc = subprocess.Popen(cmd)
    time.sleep(a.delay)
    pids = children(proc.pid)
    s0, t0, w0 = proc_stat(), threads(pids), time.monotonic()
    time.sleep(a.window)
    s1, t1, w1 = proc_stat(), threads(children(proc.pid)), time.monotonic()
    wall = w1 - w0
    rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * 5)
    for key, b in t1.items():
        e = t0.get(key)
        if e is None:
            continue
        r = rows[(str(b["process"]) + f" [{key[0]}]", f"{b['thread']}/{key[1]}")]
        r[0] += (float(b["utime"]) - float(e["utime"])) / wall
        r[1] += (float(b["stime"]) - float(e["stime"])) / wall
        r[2] += (float(b["vol"]) - float(e["vol"])) / wall
        r[3] += (float(b["invol"]) - float(e["invol"])) / wall
        r[4] += 1
    print(f"\nwindow {wall:.1f} s; per thread (name/tid)")
    print(
        f"{'process':62} {'thread':22} {'n':>3} {'user%':>6} {'sys%':>6} {'vcs/s':>8} {'ics/s':>8}"
    )
    for (proc_name, th), (u, s, v, i, n) in sorted(
        rows.items(), key=lambda kv: -kv[1][0] - kv[1][1]
    ):
        if u + s < 0.005 and v + i < 5:
            continue
        print(f"{proc_name:62} {th:22} {int(n):3d} {100 * u:6.1f} {100 * s:6.1f} {v:8.0f} {i:8.0f}")
    d = [b - e for b, e in zip(s1, s0)]
    total = sum(d[:8]) or 1
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    print("machine: " + ", ".join(f"{n} {100 * x / total:.1f}%" for n, x in zip(names, d[:8]) if x))
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
