"""No tier vanishes: a skip fails the tier under CI=true or when the tier is asked for by name,
`make test-*` prints each tier's counts, and install-slurm keeps Open MPI the default MPI."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, base_env

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")

VENV = Path(sys.executable).parent.parent

SKIPPING = """
import pytest

def test_passes():
    assert 1 + 1 == 2

def test_needs_a_daemon():
    pytest.skip("slurmd is not installed")
"""


def write_tests(tmp_path: Path) -> Path:
    path = tmp_path / "test_tier_sample.py"
    path.write_text(textwrap.dedent(SKIPPING))
    return path


def pytest_run(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in base_env().items() if k not in ("CI", "HVDBENCH_NO_SKIP")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.no_skip", "-q", "-p", "no:cacheprovider",
         str(path)],
        cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_skip_passes_on_a_developers_machine(tmp_path):
    out = pytest_run(write_tests(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed, 1 skipped" in out.stdout


@pytest.mark.parametrize("env", [{"CI": "true"}, {"HVDBENCH_NO_SKIP": "1"}])
def test_a_skip_fails_under_ci_or_when_the_tier_is_asked_for(tmp_path, env):
    out = pytest_run(write_tests(tmp_path), **env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 failed, 1 passed" in out.stdout
    assert "slurmd is not installed" in out.stdout  # the reason is kept


def test_a_module_level_skip_fails_too(tmp_path):
    path = tmp_path / "test_no_module.py"
    path.write_text("import pytest\nnope = pytest.importorskip('no_such_module_here')\n")
    out = pytest_run(path, CI="true")
    assert out.returncode != 0, out.stdout + out.stderr
    assert "no_such_module_here" in out.stdout


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
        timeout=180, env=env or base_env(),
    )  # fmt: skip


def test_a_tier_asked_for_by_name_prints_its_counts_and_fails_on_a_skip(tmp_path):
    """`make test-unit` run on a sample with one pass and one skip: the skip fails the tier
    (HVDBENCH_NO_SKIP=1), and the tier line carries the counts."""
    env = {k: v for k, v in base_env().items() if k != "CI"}
    out = make("test-unit", f"VENV={VENV}", f"UNIT_TESTS={write_tests(tmp_path)}",
               "PYTEST_ARGS=-q -p no:cacheprovider", env=env)  # fmt: skip
    assert out.returncode != 0, out.stdout + out.stderr
    line = re.search(r"^=== tier unit: \d+ s \(exit 1\): (.*) ===$", out.stdout, re.M)
    assert line, out.stdout
    assert line.group(1) == "1 passed, 0 skipped, 1 failed"


def test_a_passing_tier_line(tmp_path):
    path = tmp_path / "test_ok.py"
    path.write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    out = make("test-unit", f"VENV={VENV}", f"UNIT_TESTS={path}", "PYTEST_ARGS=-q")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^=== tier unit: \d+ s \(exit 0\): 2 passed, 0 skipped, 0 failed ===$",
                     out.stdout, re.M), out.stdout  # fmt: skip


def test_make_test_runs_every_tier_even_after_a_failing_one():
    out = make("-n", "test", "VENV=/nonexistent/venv")
    assert "--keep-going test-unit test-distributed test-slurm test-multinode" in out.stdout


def fake_tool(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_install_slurm_sets_a_flipped_mpirun_back_to_open_mpi(tmp_path):
    """If installing MPICH took over `mpirun` (and `mpi`), install-slurm sets them back.
    Run against fake dpkg/update-alternatives: the machine's own alternatives are shared."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    fake_tool(bindir, "dpkg", "exit 0\n")  # every package is installed
    fake_tool(bindir, "update-alternatives", textwrap.dedent(f"""\
        echo "$*" >> {log}
        if [ "$1" = --query ]; then
          case "$2" in
            mpirun) echo "Value: /usr/bin/mpirun.mpich" ;;
            mpi) echo "Value: /usr/bin/mpicc.mpich" ;;
            *) echo "Value: /usr/lib/x86_64-linux-gnu/openmpi/include" ;;
          esac
        fi
        """))  # fmt: skip
    env = base_env({"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    out = make("install-slurm", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = log.read_text().splitlines()
    sets = [c for c in calls if c.startswith("--set")]
    assert sets == ["--set mpirun /usr/bin/mpirun.openmpi", "--set mpi /usr/bin/mpicc.openmpi"]
    assert "mpich" in out.stdout and "Open MPI" in out.stdout


def test_install_slurm_installs_what_the_tiers_need():
    out = make("-n", "install-slurm", env=base_env({"PATH": "/nonexistent:/usr/bin:/bin"}))
    install = [line for line in out.stdout.splitlines() if "apt-get install" in line]
    assert install, out.stdout
    for pkg in ("slurmctld", "slurmd", "munge", "iproute2", "util-linux", "mpich"):
        assert f" {pkg}" in install[0]


@pytest.mark.parametrize("tier", ["test-distributed", "test-slurm", "test-multinode"])
def test_the_tiers_that_need_mpich_or_slurm_install_them(tier):
    out = make("-n", tier, "VENV=/nonexistent/venv")
    install = [line for line in out.stdout.splitlines() if "apt-get install" in line]
    assert install and " mpich" in install[0], out.stdout


def test_mpirun_is_open_mpi_here():
    """This machine after `make install-slurm`: MPICH beside Open MPI, not instead of it."""
    mpirun = shutil.which("mpirun")
    if mpirun is None or shutil.which("mpiexec.mpich") is None:
        pytest.skip("Open MPI or MPICH not installed (make install-slurm)")
    assert "openmpi" in os.path.realpath(mpirun) or "orterun" in os.path.realpath(mpirun)
