"""``hvdbench allreduce``: the gradient exchange alone, timed like nccl-tests and OSU.

For each message size, every implementation (Horovod through its MPI or Gloo controller,
and ``mpi4py``'s ``Allreduce`` when MPI launched the ranks) sums a float32 buffer across the
ranks: warm-up iterations, then ``iters`` timed ones between barriers. The time of a size is
the slowest rank's mean per iteration. Figures use nccl-tests' definitions:

    algbw = size / time
    busbw = algbw * 2 (n - 1) / n      (all-reduce: the bytes each link really carries)

so that they compare with nccl-tests and OSU across rank counts.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hvdbench import config, models
from hvdbench.components import record
from hvdbench.errors import UsageError
from hvdbench.launch import slurm

IMPLEMENTATIONS = ("horovod", "mpi4py")
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 1000**2, "MB": 1000**2,
          "MIB": 1024**2, "G": 1000**3, "GB": 1000**3, "GIB": 1024**3}  # fmt: skip


def parse_size(text: str) -> int:
    """``256MiB`` -> 268435456; ``1KB`` -> 1000; ``4096`` -> 4096 (bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise UsageError(f"--sizes: cannot read size {text!r}; expected e.g. 1KiB, 64MiB, 4096")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < 4:
        raise UsageError(f"--sizes: {text!r} is smaller than one float32 (4 bytes)")
    return value


def parse_sizes(text: str, factor: int = 2) -> list[int]:
    """``1KiB..256MiB`` (every ``factor``-fold step, ends included) or ``1KiB,4MiB,64MiB``."""
    if factor < 2:
        raise UsageError(f"--factor: must be >= 2, got {factor}")
    if ".." in text:
        lo_s, hi_s = text.split("..", 1)
        lo, hi = parse_size(lo_s), parse_size(hi_s)
        if hi < lo:
            raise UsageError(f"--sizes: {text!r} ends below where it starts")
        sizes = []
        s = lo
        while s <= hi:
            sizes.append(s)
            s *= factor
        return sizes
    return sorted({parse_size(p) for p in text.split(",") if p.strip()})


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g}{unit}" if unit == "B" else f"{n:.4g}{unit}"
        n /= 1024
    return f"{n}B"


def algbw(size_bytes: int, seconds: float) -> float:
    """Algorithm bandwidth in bytes/s: the message size over the time of one all-reduce."""
    return size_bytes / seconds


def busbw(size_bytes: int, seconds: float, n: int) -> float:
    """Bus bandwidth (nccl-tests): algbw * 2(n-1)/n, comparable across rank counts."""
    return algbw(size_bytes, seconds) * 2 * (n - 1) / n


@dataclass(frozen=True)
class Result:
    implementation: str
    size_bytes: int
    count: int  # float32 elements
    iters: int
    time_s: float  # slowest rank's mean time per all-reduce
    algbw_GBps: float
    busbw_GBps: float


def result(impl: str, size_bytes: int, iters: int, seconds: float, n: int) -> Result:
    return Result(
        impl,
        size_bytes,
        size_bytes // 4,
        iters,
        seconds,
        algbw(size_bytes, seconds) / 1e9,
        busbw(size_bytes, seconds, n) / 1e9,
    )


def iterations(size_bytes: int, iters: int, budget_bytes: int) -> int:
    """Fewer iterations for large messages: at most ``budget_bytes`` moved per size."""
    return max(1, min(iters, budget_bytes // max(size_bytes, 1)))


def table(results: Sequence[Result], n: int) -> str:
    """nccl-tests style table."""
    lines = [
        f"# all-reduce, sum of float32, {n} ranks; time = slowest rank's mean",
        f"{'impl':>8} {'size':>10} {'count':>11} {'iters':>6} {'time(us)':>11} "
        f"{'algbw(GB/s)':>12} {'busbw(GB/s)':>12}",
    ]
    for r in sorted(results, key=lambda r: (r.implementation, r.size_bytes)):
        lines.append(
            f"{r.implementation:>8} {human_bytes(r.size_bytes):>10} {r.count:>11} {r.iters:>6} "
            f"{r.time_s * 1e6:>11.1f} {r.algbw_GBps:>12.4f} {r.busbw_GBps:>12.4f}"
        )
    return "\n".join(lines)


def model_gradient_sizes(model_name: str) -> list[int]:
    """Bytes of each distinct trainable variable of a model, plus the total (what Horovod's
    tensor fusion sends at once when it fits the fusion buffer)."""

    cfg = config.load(None, [f"--model.name={model_name}"])
    model = models.build(cfg)
    sizes = [int(v.shape.num_elements()) * 4 for v in model.trainable_variables]
    return sorted(set(sizes) | {sum(sizes)})


# ---------------------------------------------------------------------------------------
# One rank


def _time_loop(
    fn: Callable[[], None], barrier: Callable[[], None], warmup: int, iters: int
) -> float:
    for _ in range(warmup):
        fn()
    barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def run_rank(
    sizes: Sequence[int],
    impls: Sequence[str],
    warmup: int,
    iters: int,
    budget_bytes: int,
) -> tuple[list[Result], dict[str, Any], bool]:
    """Time every (implementation, size) on this rank; returns results, facts, is-chief."""
    import numpy as np

    results: list[Result] = []
    facts: dict[str, Any] = {"implementations": {}}
    hvd = None
    if "horovod" in impls:
        import horovod.tensorflow as hvd_mod
        import tensorflow as tf

        hvd_mod.init()
        hvd = hvd_mod
        facts["implementations"]["horovod"] = {
            "controller": "gloo" if hvd.gloo_enabled() else "mpi",
            "version": __import__("horovod").__version__,
        }
    comm = None
    mpi_launched = any(
        k.startswith(("OMPI_COMM_WORLD_", "PMIX_RANK", "PMI_RANK")) for k in os.environ
    )
    if "mpi4py" in impls:
        if hvd is not None and not mpi_launched:
            facts["implementations"]["mpi4py"] = "skipped: the ranks were not started by MPI"
        else:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
            facts["implementations"]["mpi4py"] = {"mpi": MPI.Get_library_version().strip()}
    if hvd is not None:
        rank, size = int(hvd.rank()), int(hvd.size())
    elif comm is not None:
        rank, size = comm.Get_rank(), comm.Get_size()
    else:
        raise UsageError("allreduce: no implementation could run; choose --impl horovod or mpi4py")
    facts["world_size"] = size

    def slowest(t: float) -> float:
        if hvd is not None:
            return float(hvd.allreduce(tf.constant(t, tf.float64), op=hvd.Max, name="slowest"))
        assert comm is not None
        return float(comm.allreduce(t, op=MPI.MAX))

    # Size by size, every implementation in turn: a drift of the machine then hits both
    # sides of a size's comparison alike.
    for s in sizes:
        n_iter = iterations(s, iters, budget_bytes)
        for impl in impls:
            if impl == "horovod" and hvd is not None:
                buf = tf.ones([s // 4], tf.float32)
                name = f"ar{s}"

                def hvd_once(buf: Any = buf, name: str = name) -> None:
                    hvd.allreduce(buf, op=hvd.Sum, name=name).numpy()

                def hvd_barrier() -> None:
                    hvd.allreduce(tf.constant(0.0), op=hvd.Sum, name="barrier").numpy()

                t = _time_loop(hvd_once, hvd_barrier, warmup, n_iter)
                results.append(result("horovod", s, n_iter, slowest(t), size))
            if impl == "mpi4py" and comm is not None:
                send = np.ones(s // 4, np.float32)
                recv = np.empty_like(send)

                def mpi_once(send: Any = send, recv: Any = recv) -> None:
                    comm.Allreduce(send, recv, op=MPI.SUM)

                t = _time_loop(mpi_once, comm.Barrier, warmup, n_iter)
                results.append(result("mpi4py", s, n_iter, slowest(t), size))
    if hvd is not None:
        hvd.shutdown()
    return results, facts, rank == 0


def write(
    output_dir: str, results: Sequence[Result], facts: dict[str, Any], argv: list[str]
) -> Path:

    n = int(facts["world_size"])
    data = {
        "schema_version": record.RECORD_SCHEMA_VERSION,
        "kind": "allreduce",
        "status": "complete",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "world_size": n,
        "definitions": {
            "time_s": "slowest rank's mean time of one all-reduce (sum, float32)",
            "algbw_GBps": "size_bytes / time_s / 1e9",
            "busbw_GBps": "algbw_GBps * 2 (n - 1) / n",
        },
        "results": [asdict(r) for r in results],
        "implementations": facts["implementations"],
        "command_line": [sys.executable, "-m", "hvdbench", *argv],
        "git_sha": record.git_sha(),
        "python": record.python_version(),
        "mpi": record.mpi_version(),
        "slurm": slurm.job_info(os.environ),
        "environment": record.captured_env(os.environ),
    }
    name = record.record_name("allreduce", "bench", n)
    return record.write_atomic(Path(output_dir) / name, data)
