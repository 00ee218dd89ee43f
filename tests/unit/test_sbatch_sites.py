"""sbatch as sites use it: CPUs and GPUs per task/node, --exclusive, QoS, constraints,
reservations and any other option; a ps job's own task count; an installed hvdbench (a wheel
in a fresh venv) finds its sbatch scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hvdbench.launch import slurm
from tests.conftest import REPO, base_env, hvdbench

SITE = ["--cpus-per-task", "8", "--gpus-per-node", "a100:4", "--gres", "gpu:a100:4,nvme:1",
        "--exclusive", "--qos", "high", "--constraint", "a100&ib", "--reservation", "maint",
        "--sbatch-arg=--mail-type=END", "--sbatch-arg=--mem=0"]  # fmt: skip
SITE_ARGV = ["--cpus-per-task=8", "--gpus-per-node=a100:4", "--gres=gpu:a100:4,nvme:1",
             "--exclusive", "--qos=high", "--constraint=a100&ib", "--reservation=maint",
             "--mail-type=END", "--mem=0"]  # fmt: skip


def test_sbatch_command_with_every_site_option() -> None:
    req = slurm.JobRequest(
        nodes=2, ntasks_per_node=4, ntasks=6, cpus_per_task=8, gpus_per_node="a100:4",
        gres="gpu:a100:4,nvme:1", exclusive=True, qos="high", constraint="a100&ib",
        reservation="maint", extra=("--mail-type=END", "--mem=0"),
    )  # fmt: skip
    slurm.validate_request(req)
    assert slurm.sbatch_command(req, "s.sbatch", ["c.toml"]) == [
        "sbatch", "--parsable", "--job-name=hvdbench", "--nodes=2", "--ntasks-per-node=4",
        "--signal=USR1@90", "--ntasks=6", *SITE_ARGV, "s.sbatch", "c.toml",
    ]  # fmt: skip


def config(tmp_path: Path, text: str = '[model]\nname = "trivial"\n') -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    return cfg


def first_line(r) -> str:  # type: ignore[no-untyped-def]
    assert r.returncode == 0, r.output
    return r.stdout.splitlines()[0]


def test_submit_passes_the_site_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tmp_path)
    r = hvdbench("submit", str(cfg), "--nodes", "2", "--ntasks-per-node", "4", *SITE,
                 "--dry-run", timeout=60)  # fmt: skip
    script = REPO / "hvdbench" / "slurm_scripts" / "horovod_srun.sbatch"
    assert first_line(r) == " ".join([
        "sbatch", "--parsable", "--job-name=hvdbench-horovod-trivial", "--nodes=2",
        "--ntasks-per-node=4", *[a if "&" not in a else f"'{a}'" for a in SITE_ARGV],
        str(script), str(cfg),
    ])  # fmt: skip
    # --dry-run shows the full script after the command
    assert r.stdout.split("\n", 2)[2] == script.read_text()


def test_a_ps_job_asks_for_its_own_tasks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tmp_path)
    r = hvdbench("submit", str(cfg), "--nodes", "2", "--ntasks-per-node", "2", "--dry-run",
                 "--mode.name=parameter_server", "--launch.np=2", timeout=60)  # fmt: skip
    line = first_line(r)
    assert " --nodes=2 --ntasks-per-node=2 --ntasks=3 " in line, line
    assert line.split()[-4].endswith("ps_srun.sbatch")


def test_a_ps_job_that_does_not_fit_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tmp_path)
    r = hvdbench("submit", str(cfg), "--nodes", "1", "--ntasks-per-node", "2", "--dry-run",
                 "--mode.name=parameter_server", "--launch.np=2", timeout=60)  # fmt: skip
    assert r.returncode == 2, r.output
    assert r.stderr.strip() == (
        "hvdbench: error: --nodes 1 x --ntasks-per-node 2 holds 2 task(s), but mode "
        "parameter_server with launch.np=2 needs ps(1) + workers(2) = 3; raise --nodes or "
        "--ntasks-per-node"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus-per-node", "four"], "--gpus-per-node: cannot read 'four'"),
        (["--gres", "gpu 4"], "--gres: cannot read"),
        (["--cpus-per-task", "-1"], "--cpus-per-task: must be >= 1"),
        (["--sbatch-arg=mail"], "--sbatch-arg: 'mail' is not an sbatch option"),
        (["--sbatch-arg=--ntasks=9"], "--sbatch-arg: --ntasks is set by hvdbench submit"),
        (["--qos", "a b"], "--qos: 'a b' has blanks"),
    ],
)
def test_bad_site_options_are_one_line_exit_2(tmp_path, args, message) -> None:  # type: ignore[no-untyped-def]
    r = hvdbench("submit", str(config(tmp_path)), "--nodes", "1", "--ntasks-per-node", "1",
                 *args, "--dry-run", timeout=60)  # fmt: skip
    assert r.returncode == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sweep_on_slurm_passes_the_site_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = hvdbench("sweep", "--ranks", "1,2", "--launcher", "slurm", "--ntasks-per-node", "2",
                 "--study", str(tmp_path / "s"), "--dry-run", "--model.name=trivial",
                 "--cpus-per-task", "4", "--exclusive", "--qos", "low",
                 "--sbatch-arg=--mem=0", timeout=60)  # fmt: skip
    assert r.returncode == 0, r.output
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("sbatch")]
    assert (
        f"--output={tmp_path / 's'}/logs/slurm-%j.out --cpus-per-task=4 --exclusive --qos=low "
        "--mem=0 '--wrap=" in line
    ), line


def test_an_installed_wheel_finds_its_sbatch_scripts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Build a wheel from the sources, install it with --no-deps into a fresh venv that sees
    the project's site-packages, and run `hvdbench submit --dry-run` outside the repo."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "hvdbench", src / "hvdbench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    env = {k: v for k, v in base_env().items() if k != "PYTHONPATH"}
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("hvdbench-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)  # fmt: skip
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip()  # fmt: skip
    project_site = next(p for p in sys.path if p.endswith("site-packages"))
    Path(site, "project-deps.pth").write_text(project_site + "\n")  # numpy, pip, ...
    install = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cfg = config(elsewhere)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    r = subprocess.run(
        [str(venv / "bin" / "hvdbench"), "submit", str(cfg), "--nodes", "1",
         "--ntasks-per-node", "2", "--dry-run"],
        capture_output=True, text=True, timeout=120, env=env, cwd=elsewhere,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    script = Path(site) / "hvdbench" / "slurm_scripts" / "horovod_srun.sbatch"
    assert str(script) in r.stdout.splitlines()[0]
    assert "-m hvdbench run" in r.stdout  # the script itself follows
    where = subprocess.run([str(py), "-c", "import hvdbench; print(hvdbench.__file__)"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=elsewhere)  # fmt: skip
    assert where.stdout.strip().startswith(site), where.stdout  # the wheel, not the checkout
    assert (Path(site) / "hvdbench" / "configs" / "default.toml").is_file()
