"""A local weak-scaling sweep at 1 and 2 ranks, its report, CSV and plot; the all-reduce
micro-benchmark at 2 ranks; a failing point recorded as failed."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest

from hvdbench.study import records
from tests.conftest import hvdbench

pytestmark = pytest.mark.distributed

TINY = ["--model.name=trivial", "--train.per_device_batch_size=8", "--train.num_steps=12",
        "--train.num_warmup_steps=2", "--train.display_every=6"]  # fmt: skip


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("study")
    r = hvdbench(
        "sweep", "--ranks", "1,2", "--launcher", "horovodrun", "--study", str(d),
        "--point-timeout", "240", *TINY, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.output
    assert "2 of 2 point(s) completed" in r.stdout
    return d


def test_sweep_records_one_per_point_with_fixed_per_device_batch(study: Path) -> None:
    recs = records.load(study)
    assert sorted(records.num_ranks(r) for r in recs) == [1, 2]
    for r in recs:
        assert r["status"] == "complete" and r["mode"] == "horovod"
        assert r["totals"]["per_device_batch_size"] == 8
        assert r["totals"]["global_batch_size"] == 8 * records.num_ranks(r)
        n = records.num_ranks(r)
        assert r["environment"]["HVDBENCH_STUDY_POINT"] == f"mode=horovod,ranks={n},repeat=0"
    assert len(list((study / "logs").glob("*.log"))) == 2


def test_report_csv_and_plot_match_the_records(study: Path, tmp_path: Path) -> None:
    csv_path, png = tmp_path / "r.csv", tmp_path / "eff.png"
    r = hvdbench("report", str(study), "--csv", str(csv_path), "--plot", str(png), timeout=120)
    assert r.returncode == 0, r.output
    recs = {records.num_ranks(x): x["totals"] for x in records.load(study)}
    rows = {int(row["ranks"]): row for row in csv.DictReader(csv_path.open())}
    assert set(rows) == {1, 2}
    for n, t in recs.items():
        assert float(rows[n]["total_images_per_sec"]) == pytest.approx(t["total_images_per_sec"])
        assert float(rows[n]["per_device_images_per_sec"]) == pytest.approx(
            t["per_device_images_per_sec"]
        )
        assert float(rows[n]["step_time_median_ms"]) == pytest.approx(1000 * t["step_time_median"])
        lo, hi = t["per_device_images_per_sec_ci95"]
        assert float(rows[n]["per_device_ci95_lo"]) == pytest.approx(lo)
        assert float(rows[n]["per_device_ci95_hi"]) == pytest.approx(hi)
        assert f"| horovod | {n} | {8 * n} | 1 | {t['total_images_per_sec']:.1f} |" in r.stdout
    eff = recs[2]["per_device_images_per_sec"] / recs[1]["per_device_images_per_sec"]
    assert float(rows[2]["scaling_efficiency"]) == pytest.approx(eff)
    assert float(rows[1]["scaling_efficiency"]) == 1.0
    assert png_size(png) == (800, 500)


def test_baseline_against_itself_passes_and_against_a_faster_one_fails(
    study: Path, tmp_path: Path
) -> None:
    ok = hvdbench("report", str(study), "--baseline", str(study), "--tolerance", "0%", timeout=120)
    assert ok.returncode == 0, ok.output
    faster = tmp_path / "faster"
    faster.mkdir()
    for rec in records.load(study):
        rec.pop("_path")
        rec["totals"]["total_images_per_sec"] *= 1.5
        (faster / Path(rec["created"].replace(":", "") + f"-{records.num_ranks(rec)}.json")
         ).write_text(json.dumps(rec))  # fmt: skip
    bad = hvdbench(
        "report", str(study), "--baseline", str(faster), "--tolerance", "5%", timeout=120
    )
    assert bad.returncode == 1, bad.output
    assert bad.stdout.count("REGRESSION") == 2


def test_failed_point_is_recorded_with_its_error(tmp_path: Path) -> None:
    """channels_first passes config validation but every rank refuses it on a CPU."""
    r = hvdbench(
        "sweep", "--ranks", "1", "--study", str(tmp_path), "--point-timeout", "120", *TINY,
        "--model.data_format=channels_first", timeout=180,
    )  # fmt: skip
    assert r.returncode == 1, r.output
    assert "FAILED (exit 2)" in r.stdout
    recs = records.load(tmp_path)
    assert len(recs) == 1
    rec = recs[0]
    assert rec["status"] == "failed" and rec["ranks"] == 1 and rec["returncode"] == 2
    assert rec["error"].startswith("exit code 2: hvdbench: error: model.data_format:")
    assert "channels_first" in rec["log"] and Path(rec["log_file"]).is_file()
    rep = hvdbench("report", str(tmp_path), timeout=60)
    assert "| horovod | 1 | — | 0 (+1 failed) |" in rep.stdout
    assert "- failed: horovod n=1: exit code 2: hvdbench: error: model.data_format:" in rep.stdout


def test_allreduce_two_ranks_gives_busbw_for_a_range_of_sizes(tmp_path: Path) -> None:
    r = hvdbench(
        "allreduce", "--np", "2", "--sizes", "1KiB..1MiB", "--factor", "4", "--iters", "5",
        "--warmup", "2", "--output", str(tmp_path), timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.output
    (path,) = tmp_path.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["kind"] == "allreduce" and rec["world_size"] == 2
    sizes = [1024, 4096, 16384, 65536, 262144, 1048576]
    for impl in ("horovod", "mpi4py"):
        res = [x for x in rec["results"] if x["implementation"] == impl]
        assert [x["size_bytes"] for x in res] == sizes
        for x in res:
            assert x["time_s"] > 0
            assert x["algbw_GBps"] == pytest.approx(x["size_bytes"] / x["time_s"] / 1e9)
            assert x["busbw_GBps"] == pytest.approx(x["algbw_GBps"] * 2 * (2 - 1) / 2)
    assert "busbw(GB/s)" in r.stdout


def test_predict_from_the_study_and_an_allreduce_record(study: Path, tmp_path: Path) -> None:
    ar = {
        "schema_version": 1, "kind": "allreduce", "status": "complete", "world_size": 2,
        "results": [{"implementation": "horovod", "size_bytes": s, "time_s": 1e-4 + s / 1e9}
                    for s in (1024, 65536, 4194304)],
    }  # fmt: skip
    ar_path = tmp_path / "ar.json"
    ar_path.write_text(json.dumps(ar))
    r = hvdbench("predict", str(study), "--ranks", "16,256", "--allreduce", str(ar_path),
                 timeout=180)  # fmt: skip
    assert r.returncode == 0, r.output
    # exact data: α = 1e-4 / 2 = 50 us, B = 1 GB/s
    assert "α = 50.00 us, B = 1.000 GB/s" in r.stdout
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("| horovod |")]
    assert [ln.split("|")[2].strip() for ln in lines] == ["1", "2", "16", "256"]
