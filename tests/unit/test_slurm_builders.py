"""sbatch/srun command lines (exact argv), job identity from SLURM_*, and `submit --dry-run`."""

from __future__ import annotations

import pytest

from hvdbench.errors import UsageError
from hvdbench.launch import slurm
from hvdbench.study import commands, sweep
from tests.conftest import REPO, hvdbench


def test_sbatch_command_minimal() -> None:
    req = slurm.JobRequest(nodes=2, ntasks_per_node=4)
    assert slurm.sbatch_command(req, "slurm/horovod_srun.sbatch", ["my.toml"]) == [
        "sbatch",
        "--parsable",
        "--job-name=hvdbench",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--signal=USR1@90",
        "slurm/horovod_srun.sbatch",
        "my.toml",
    ]


def test_sbatch_command_every_option() -> None:
    req = slurm.JobRequest(
        nodes=3,
        ntasks_per_node=1,
        partition="gpu",
        time="01:30:00",
        account="proj42",
        job_name="hvd",
        signal="B:USR1@120",
        output="/s/logs/slurm-%j.out",
        extra=("--exclusive",),
    )
    cmd = slurm.sbatch_command(
        req, "x.sbatch", ["c.toml", "--train.num_steps=5"], sbatch="/usr/bin/sbatch"
    )
    assert cmd == [
        "/usr/bin/sbatch",
        "--parsable",
        "--job-name=hvd",
        "--nodes=3",
        "--ntasks-per-node=1",
        "--partition=gpu",
        "--time=01:30:00",
        "--account=proj42",
        "--signal=B:USR1@120",
        "--output=/s/logs/slurm-%j.out",
        "--exclusive",
        "x.sbatch",
        "c.toml",
        "--train.num_steps=5",
    ]


def test_sbatch_wrap_quotes_the_command() -> None:
    req = slurm.JobRequest(nodes=1, ntasks_per_node=2, signal="")
    cmd = slurm.sbatch_command(req, wrap=["python", "-m", "hvdbench", "sweep", "a b.toml"])
    assert cmd[-1] == "--wrap=python -m hvdbench sweep 'a b.toml'"
    assert "--signal=" not in " ".join(cmd)
    with pytest.raises(ValueError):
        slurm.sbatch_command(req)


def test_srun_command() -> None:
    assert slurm.srun_command(4, ["python", "-m", "hvdbench", "run"]) == [
        "srun",
        "--ntasks=4",
        "--mpi=pmix",
        "--kill-on-bad-exit=0",
        "--wait=60",
        "python",
        "-m",
        "hvdbench",
        "run",
    ]
    assert slurm.srun_command(2, ["x"], nodes=2, mpi="pmi2", wait_seconds=5) == [
        "srun",
        "--ntasks=2",
        "--nodes=2",
        "--mpi=pmi2",
        "--kill-on-bad-exit=0",
        "--wait=5",
        "x",
    ]
    with pytest.raises(UsageError, match="pmix"):
        slurm.srun_command(2, ["x"], mpi="openmpi")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nodes": 0, "ntasks_per_node": 1}, "--nodes"),
        ({"nodes": 1, "ntasks_per_node": 0}, "--ntasks-per-node"),
        ({"nodes": 1, "ntasks_per_node": 1, "time": "1h"}, "--time"),
        ({"nodes": 1, "ntasks_per_node": 1, "signal": "USR1 @ 9"}, "--signal"),
    ],
)
def test_validate_request_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        slurm.validate_request(slurm.JobRequest(**kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("time", ["30", "10:00", "01:00:00", "2-12", "1-00:30:00", "UNLIMITED"])
def test_validate_request_accepts_slurm_times(time: str) -> None:
    slurm.validate_request(slurm.JobRequest(nodes=1, ntasks_per_node=1, time=time))


def test_job_info_from_srun_step_and_batch() -> None:
    env = {
        "SLURM_JOB_ID": "77",
        "SLURM_STEP_ID": "3",
        "SLURM_PROCID": "1",
        "SLURM_JOB_NODELIST": "n[01-02]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NAME": "hvd",
        "SLURM_JOB_PARTITION": "debug",
    }
    info = slurm.job_info(env)
    assert info is not None
    assert info["job_id"] == "77" and info["step_id"] == "3"
    assert info["node_list"] == "n[01-02]" and info["nodes"] == ["n01", "n02"]
    assert info["num_nodes"] == 2 and info["partition"] == "debug"
    batch = slurm.job_info({"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "vm"})
    assert batch is not None and batch["step_id"] == "batch" and batch["nodes"] == ["vm"]
    assert slurm.job_info({}) is None
    assert slurm.in_allocation({"SLURM_JOB_ID": "77"})
    assert not slurm.in_allocation(env)


def test_parse_job_id() -> None:
    assert slurm.parse_job_id("123\n") == "123"
    assert slurm.parse_job_id("123;cluster\n") == "123"
    with pytest.raises(UsageError):
        slurm.parse_job_id("sbatch: error: nope")


def test_inner_sweep_and_srun_point_commands() -> None:
    p = sweep.Point("horovod", 2, 0)
    argv = sweep.run_argv("/c.toml", p, "/study", ["--train.num_steps=5"])
    assert argv == [
        "run",
        "/c.toml",
        "--train.num_steps=5",
        "--mode.name=horovod",
        "--launch.np=2",
        "--output.dir=/study",
    ]
    inner = sweep.inner_sweep_argv(
        "/c.toml", [1, 2, 4], ["horovod"], 3, "/study", ["--model.name=trivial"], 600, python="py"
    )
    assert inner == [
        "py",
        "-m",
        "hvdbench",
        "sweep",
        "/c.toml",
        "--ranks=1,2,4",
        "--modes=horovod",
        "--repeats=3",
        "--launcher=slurm",
        "--study=/study",
        "--point-timeout=600",
        "--model.name=trivial",
    ]
    assert sweep.slurm_nodes(5, 2) == 3 and sweep.slurm_nodes(1, 4) == 1


def test_script_per_mode() -> None:
    scripts = REPO / "hvdbench" / "slurm_scripts"  # package data; slurm/ links to them
    assert commands.script_for("horovod", "srun") == scripts / "horovod_srun.sbatch"
    assert commands.script_for("horovod", "mpirun") == scripts / "horovod_mpirun.sbatch"
    assert commands.script_for("parameter_server", "srun") == scripts / "ps_srun.sbatch"
    for name in ("horovod_srun", "horovod_mpirun", "ps_srun"):
        text = (REPO / "slurm" / f"{name}.sbatch").read_text()
        assert "#SBATCH --signal=" in text and "-m hvdbench run" in text


def test_submit_dry_run_prints_the_exact_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nname = "trivial"\n')
    r = hvdbench(
        "submit", str(cfg), "--nodes", "2", "--ntasks-per-node", "4", "--partition", "p",
        "--time", "30", "--account", "a", "--dry-run", "--train.num_steps=7", timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.output
    first = r.stdout.splitlines()[0]
    assert first == (
        "sbatch --parsable --job-name=hvdbench-horovod-trivial --nodes=2 --ntasks-per-node=4 "
        f"--partition=p --time=30 --account=a {REPO}/hvdbench/slurm_scripts/horovod_srun.sbatch "
        f"{cfg} "
        "--train.num_steps=7"
    )
    assert "srun --mpi=" in r.stdout  # the script follows


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nodes", "0", "--ntasks-per-node", "1"], "--nodes: must be >= 1"),
        (["--nodes", "1", "--ntasks-per-node", "1", "--time", "soon"], "--time"),
        (["--nodes", "1", "--ntasks-per-node", "1", "--train.bogus=1"], "train.bogus"),
    ],
)
def test_submit_bad_input_is_one_line_exit_2(tmp_path, args, message) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    r = hvdbench("submit", str(cfg), *args, "--dry-run", timeout=60)
    assert r.returncode == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sweep_slurm_dry_run_packed_and_per_point(tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = tmp_path / "s"
    common = ["sweep", "--ranks", "1,2,4", "--launcher", "slurm", "--ntasks-per-node", "2",
              "--study", str(study), "--time", "10", "--dry-run", "--model.name=trivial"]  # fmt: skip
    packed = hvdbench(*common, timeout=60)
    assert packed.returncode == 0, packed.output
    (line,) = [ln for ln in packed.stdout.splitlines() if ln.startswith("sbatch")]
    assert line.startswith(
        "sbatch --parsable --job-name=hvdbench-sweep-horovod-n1_2_4 --nodes=2 "
        f"--ntasks-per-node=2 --time=10 --output={study}/logs/slurm-%j.out '--wrap="
    )
    assert "--ranks=1,2,4 --modes=horovod --repeats=1 --launcher=slurm" in line
    per = hvdbench(*common, "--slurm-jobs", "per-point", timeout=60)
    assert per.returncode == 0, per.output
    lines = [ln for ln in per.stdout.splitlines() if ln.startswith("sbatch")]
    assert [ln.split()[3] for ln in lines] == ["--nodes=1", "--nodes=1", "--nodes=2"]
    assert ["--ranks=1 " in lines[0], "--ranks=2 " in lines[1], "--ranks=4 " in lines[2]] == [
        True
    ] * 3
    assert not study.exists()  # a dry run writes nothing


def test_sweep_local_dry_run_prints_launcher_commands(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = hvdbench("sweep", "--ranks", "1,2", "--launcher", "mpirun", "--study", str(tmp_path / "s"),
                 "--dry-run", timeout=60)  # fmt: skip
    assert r.returncode == 0, r.output
    cmds = [ln for ln in r.stdout.splitlines() if "hvdbench run" in ln]
    assert len(cmds) == 2
    assert " -m hvdbench run --mode.name=horovod --launch.np=1 " in cmds[0]
    assert "mpirun -np 2 -H localhost:2 --bind-to none --map-by slot" in cmds[1]
    assert cmds[1].endswith(f"--launch.np=2 --output.dir={tmp_path / 's'}")


def test_sweep_slurm_outside_a_job_needs_tasks_per_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = hvdbench("sweep", "--ranks", "2", "--launcher", "slurm", "--study", str(tmp_path),
                 "--dry-run", timeout=60)  # fmt: skip
    assert r.returncode == 2 and "--ntasks-per-node" in r.stderr


def test_topology_matches_what_the_local_slurm_showed() -> None:
    """Checked on the real cluster (tests/slurm): the batch step has no SLURM_STEP_ID; srun
    steps have a numeric one. mpirun across nodes starts its daemons with srun, so remote
    ranks see a numeric step id and SLURM_PROCID = node index: Open MPI's variables win."""
    from hvdbench.launch import topology

    batch = {"SLURM_JOB_ID": "5", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    assert not topology.in_srun_step(batch)
    assert topology.detect(batch, "vm").source == "single"
    step = batch | {"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
                    "SLURM_LOCALID": "1", "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NODEID": "0"}  # fmt: skip
    t = topology.detect(step, "vm")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (1, 2, 1, 2, "slurm")
    pmix = step | {"PMIX_RANK": "1"}
    assert topology.detect(pmix, "vm").source == "pmix"
    remote_mpirun = step | {"SLURM_PROCID": "1", "OMPI_COMM_WORLD_RANK": "3",
                            "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                            "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}  # fmt: skip
    t = topology.detect(remote_mpirun, "n2")
    assert (t.rank, t.size, t.local_rank, t.source) == (3, 4, 1, "openmpi")
