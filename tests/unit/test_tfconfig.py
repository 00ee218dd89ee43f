"""TF_CONFIG from outside (TFJob, Vertex AI, SageMaker) as the cluster of the gRPC modes."""

from __future__ import annotations

import json

import pytest

from hvdbench import config, tfconfig
from hvdbench.errors import UsageError
from tests.conftest import base_env, hvdbench

PS_CLUSTER = {
    "chief": ["c:2222"],
    "worker": ["w0:2222", "w1:2222"],
    "ps": ["p0:2222", "p1:2222"],
    "evaluator": ["e:2222"],
}


def tf_config(kind: str, index: int = 0, cluster: dict | None = None) -> str:
    return json.dumps({"cluster": cluster or PS_CLUSTER, "task": {"type": kind, "index": index}})


@pytest.mark.parametrize(
    ("kind", "index", "job", "where"),
    [("chief", 0, "worker", 0), ("worker", 0, "worker", 1), ("worker", 1, "worker", 2),
     ("ps", 1, "ps", 1), ("evaluator", 0, "evaluator", 0)],
)  # fmt: skip
def test_task_types_map_as_tensorflow_does(kind, index, job, where):
    ext = tfconfig.parse(tf_config(kind, index))
    assert (ext.job, ext.index) == (job, where)
    assert ext.worker == ("c:2222", "w0:2222", "w1:2222")  # chief is worker 0
    assert ext.ps == ("p0:2222", "p1:2222")


def test_without_a_chief_worker_0_is_the_chief():
    ext = tfconfig.parse(tf_config("worker", 1, {"worker": ["a:1", "b:1"]}))
    assert (ext.job, ext.index, ext.worker, ext.ps) == ("worker", 1, ("a:1", "b:1"), ())


def test_tf_config_is_the_explicit_cluster(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config("worker", 1))
    cfg = config.load(None, ["--mode.name=parameter_server"])
    cl = cfg.cluster
    assert (cl.job_name, cl.task_index, cl.ps_hosts) == ("worker", 2, "p0:2222,p1:2222")
    assert cl.worker_hosts == "c:2222,w0:2222,w1:2222" and cfg.ps.num_ps == 2
    assert cfg.launch.np == 0  # a task, never a launcher


def test_horovod_mode_ignores_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    assert config.load(None, []).cluster.job_name == ""


def test_same_value_given_twice_is_fine(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config("chief"))
    cfg = config.load(None, ["--mode.name=parameter_server", "--ps.num_ps=2", "--launch.np=3"])
    assert cfg.cluster.task_index == 0


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("{bad", "parameter_server", "TF_CONFIG: not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', "collective_all_reduce", "no 'task'"),
        ('{"task": {"type": "worker"}}', "collective_all_reduce", "no 'cluster'"),
        (tf_config("worker", 2), "parameter_server", "task worker index 2 is out of range; "
         "cluster.worker has 2 task(s)"),
        (tf_config("ps", 5), "parameter_server", "task ps index 5 is out of range"),
        (tf_config("master"), "parameter_server", "task type 'master' is not one of: chief, "
         "worker, ps, evaluator"),
        (tf_config("worker", -1), "parameter_server", "task index -1 must be an integer >= 0"),
        (json.dumps({"cluster": {"worker": ["a"]}, "task": {"type": "worker"}}),
         "collective_all_reduce", "TF_CONFIG cluster.worker: cannot read 'a'"),
        (tf_config("worker"), "collective_all_reduce", "cluster.ps has 2 task(s), but mode "
         "collective_all_reduce has no ps tasks"),
        (tf_config("worker", 0, {"worker": ["a:1"]}), "parameter_server", "needs a cluster.ps"),
    ],
)  # fmt: skip
def test_bad_tf_config_is_one_line(monkeypatch, text, mode, expected):
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(UsageError) as e:
        config.load(None, [f"--mode.name={mode}"])
    assert expected in str(e.value)


@pytest.mark.parametrize(
    ("override", "named"),
    [("--cluster.worker_hosts=x:1", "cluster.worker_hosts='x:1'"),
     ("--cluster.job_name=ps", "cluster.job_name='ps'"),
     ("--ps.num_ps=1", "ps.num_ps=1"), ("--launch.np=2", "launch.np=2")],
)  # fmt: skip
def test_a_config_that_says_otherwise_names_both(monkeypatch, override, named):
    monkeypatch.setenv("TF_CONFIG", tf_config("worker"))
    with pytest.raises(UsageError) as e:
        config.load(None, ["--mode.name=parameter_server", override])
    assert named in str(e.value) and "conflicts with TF_CONFIG" in str(e.value)


def test_cli_bad_tf_config_exits_2_in_one_line_before_tensorflow():
    env = base_env({"TF_CONFIG": tf_config("worker", 9), "PYTHONPROFILEIMPORTTIME": "1"})
    r = hvdbench("run", "--mode.name=parameter_server", env=env, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("import time:")]
    assert len(lines) == 1 and "index 9 is out of range" in lines[0], r.stderr[-2000:]
    imported = [ln for ln in r.stderr.splitlines() if ln.startswith("import time:")]
    assert imported and not [ln for ln in imported if "tensorflow" in ln]


def test_cli_evaluator_exits_0_at_once_with_a_line(tmp_path):
    env = base_env({"TF_CONFIG": tf_config("evaluator")})
    r = hvdbench("run", "--mode.name=parameter_server", f"--output.dir={tmp_path}", env=env)
    assert r.returncode == 0, r.output
    assert "evaluator" in r.stderr and "nothing to do" in r.stderr
    assert list(tmp_path.iterdir()) == []
