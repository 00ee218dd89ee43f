"""reframe/hvdbench_checks.py under the real `reframe`, without a cluster: `--dry-run`
writes each case's job script, whose task count and hvdbench command are checked here.
(The Slurm tier runs the checks for real.)"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, base_env, run


@pytest.mark.parametrize(
    ("mode", "ranks", "tasks", "extra"),
    [("horovod", 2, 2, ""), ("parameter_server", 2, 3, " --ps.num_ps=1"),
     ("collective_all_reduce", 1, 1, "")],
)  # fmt: skip
def test_job_script_of_each_case(tmp_path: Path, mode: str, ranks: int, tasks: int, extra: str):
    reframe = shutil.which("reframe", path=str(Path(sys.executable).parent))
    assert reframe, "reframe-hpc is in DEV_DEPS: make install"
    cmd = [
        reframe,
        "-C", str(REPO / "tests/slurm/reframe_settings.py"),
        "-c", str(REPO / "reframe/hvdbench_checks.py"),
        "--system", "hvdslurm:debug",
        "--prefix", str(tmp_path / "rfm"),
        "-n", f"hvdbench_check%mode={mode}%ranks={ranks}",
        "-S", "python=/opt/venv/bin/python",
        "--dry-run",
    ]  # fmt: skip
    r = run(cmd, timeout=120, env=base_env({"TMPDIR": str(tmp_path)}), cwd=tmp_path)
    assert r.returncode == 0, r.output[-3000:]
    scripts = list((tmp_path / "rfm").rglob("rfm_job.sh"))
    assert len(scripts) == 1, r.output[-3000:]
    text = scripts[0].read_text()
    assert f"#SBATCH --ntasks={tasks}\n" in text and "#SBATCH --partition=debug\n" in text
    assert (
        f"srun --mpi=pmix /opt/venv/bin/python -m hvdbench run --mode.name={mode} "
        "--model.name=trivial --train.per_device_batch_size=32 --train.num_warmup_steps=2 "
        f"--train.num_steps=20 --output.dir=hvdbench-records --launch.np={ranks}{extra}\n"
    ) in text
