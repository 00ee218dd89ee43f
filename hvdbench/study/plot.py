"""Scaling efficiency against ranks, one line per mode, with the ideal line (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hvdbench.study.report import Row

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 5.0, 100  # 800 x 500 pixels


def efficiency_plot(
    rows: Sequence[Row],
    path: str | Path,
    title: str = "Weak scaling",
    predicted: dict[str, list[tuple[int, float]]] | None = None,
) -> Path:
    """Write the PNG (800x500 px); measured points solid, predictions dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    try:
        all_ranks: set[int] = set()
        for mode in sorted({r.mode for r in rows}):
            pts = sorted(
                (r.ranks, r.scaling_efficiency)
                for r in rows
                if r.mode == mode and r.scaling_efficiency is not None
            )
            if not pts:
                continue
            all_ranks.update(n for n, _ in pts)
            ax.plot([n for n, _ in pts], [e for _, e in pts], marker="o", label=mode)
        for mode, pts in sorted((predicted or {}).items()):
            all_ranks.update(n for n, _ in pts)
            ax.plot([n for n, _ in pts], [e for _, e in pts], ls="--", marker="x",
                    label=f"{mode} (model)")  # fmt: skip
        xs = sorted(all_ranks) or [1]
        ax.plot(xs, [1.0] * len(xs), color="gray", ls=":", label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        effs = [r.scaling_efficiency for r in rows if r.scaling_efficiency is not None]
        ax.set_ylim(0, max([1.15, *(1.1 * e for e in effs)]))
        ax.set_xlabel("compute ranks")
        ax.set_ylabel("scaling efficiency (per-device img/s vs smallest N)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path
