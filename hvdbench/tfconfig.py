"""A ``TF_CONFIG`` set from outside (Kubeflow's TFJob, Vertex AI, SageMaker) as a cluster
source for the gRPC modes and ``collective_all_reduce``.

Pure functions, no TensorFlow: a bad ``TF_CONFIG`` fails in one line, exit 2, before
anything heavy is imported. The task types map as TensorFlow maps them:

* ``chief`` is worker 0, and the ``worker`` tasks follow it (worker i is worker i + 1);
  without a chief, worker 0 is the chief;
* ``ps`` tasks are the ps tasks, in order;
* ``evaluator`` is no member of the training cluster (TensorFlow leaves it out of the
  ClusterSpec too). A benchmark has nothing for it to do: ``hvdbench run`` prints one
  line and exits 0 at once, so a TFJob with an evaluator replica neither hangs nor fails.

The result is the explicit cluster (``cluster.*``, ``ps.num_ps``, ``launch.np``), so the
rest of hvdbench runs exactly as with hand-written host lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hvdbench.errors import UsageError
from hvdbench.hostlist import parse_host_list

TASK_TYPES = ("chief", "worker", "ps", "evaluator")
EVALUATOR = "evaluator"


@dataclass(frozen=True)
class ExternalCluster:
    """The cluster a ``TF_CONFIG`` describes, in hvdbench's terms (chief folded into the
    workers), and this task's place in it."""

    ps: tuple[str, ...]
    worker: tuple[str, ...]
    job: str  # "ps", "worker" or "evaluator"
    index: int

    def settings(self) -> dict[str, Any]:
        """The config keys this cluster sets, dotted key -> value (none for an evaluator,
        which takes no part in the run)."""
        if self.job == EVALUATOR:
            return {}
        values: dict[str, Any] = {
            "cluster.ps_hosts": ",".join(self.ps),
            "cluster.worker_hosts": ",".join(self.worker),
            "launch.np": len(self.worker),
        }
        if self.ps:
            values["ps.num_ps"] = len(self.ps)
        values["cluster.job_name"] = self.job
        values["cluster.task_index"] = self.index
        return values


def _hosts(cluster: Mapping[str, Any], job: str) -> list[str]:
    hosts = cluster.get(job, [])
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise UsageError(f"TF_CONFIG: cluster.{job} must be a list of 'host:port' strings")
    for h in hosts:
        parse_host_list(h, f"TF_CONFIG cluster.{job}")
    return hosts


def parse(text: str) -> ExternalCluster:
    """Read a ``TF_CONFIG`` JSON string; raise UsageError naming what is wrong."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"TF_CONFIG: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    if not isinstance(doc, dict):
        raise UsageError("TF_CONFIG: must be a JSON object with 'cluster' and 'task'")
    cluster, task = doc.get("cluster"), doc.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise UsageError('TF_CONFIG: no \'cluster\' object (e.g. {"worker": ["host:port"]})')
    if not isinstance(task, dict) or "type" not in task:
        raise UsageError(
            'TF_CONFIG: no \'task\' with a \'type\' (e.g. {"type": "worker", "index": 0}); '
            "every task needs its own"
        )
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown:
        raise UsageError(
            f"TF_CONFIG: cluster job {unknown[0]!r} is not one of: {', '.join(TASK_TYPES)}"
        )
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in TASK_TYPES:
        raise UsageError(f"TF_CONFIG: task type {kind!r} is not one of: {', '.join(TASK_TYPES)}")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UsageError(f"TF_CONFIG: task index {index!r} must be an integer >= 0")
    jobs = {job: _hosts(cluster, job) for job in TASK_TYPES}
    if len(jobs["chief"]) > 1:
        raise UsageError(f"TF_CONFIG: cluster.chief has {len(jobs['chief'])} tasks; at most 1")
    if kind != EVALUATOR or jobs[EVALUATOR]:
        if index >= len(jobs[kind]):
            raise UsageError(
                f"TF_CONFIG: task {kind} index {index} is out of range; cluster.{kind} has "
                f"{len(jobs[kind])} task(s)"
            )
    workers = (*jobs["chief"], *jobs["worker"])
    if not workers:
        raise UsageError("TF_CONFIG: the cluster has no chief and no worker task")
    if kind == "chief":
        job, where = "worker", 0
    elif kind == "worker":
        job, where = "worker", index + len(jobs["chief"])
    else:
        job, where = kind, index
    return ExternalCluster(tuple(jobs["ps"]), workers, job, where)


def from_env(env: Mapping[str, str]) -> ExternalCluster | None:
    """The cluster of ``TF_CONFIG`` in ``env``, or None when it is unset or empty."""
    text = env.get("TF_CONFIG", "").strip()
    return parse(text) if text else None


def check_mode(mode: str, needs_ps: bool, ext: ExternalCluster) -> None:
    """The ps tasks of TF_CONFIG must fit the mode (``needs_ps``: it has ps tasks)."""
    if ext.ps and not needs_ps:
        raise UsageError(
            f"TF_CONFIG: cluster.ps has {len(ext.ps)} task(s), but mode {mode} has no ps "
            "tasks; use mode parameter_server or distributed_replicated, or drop the ps job"
        )
    if not ext.ps and needs_ps:
        raise UsageError(f"TF_CONFIG: mode {mode} needs a cluster.ps job; it has none")


def apply(
    values: dict[str, dict[str, Any]],
    given: Mapping[str, Any],
    ext: ExternalCluster,
    needs_ps: bool,
) -> None:
    """Put the cluster of ``ext`` into the config ``values``. ``given`` holds the keys the
    user's file and overrides set: one that says otherwise is an error naming both."""
    check_mode(values["mode"]["name"], needs_ps, ext)
    settings = ext.settings()
    for dotted, value in settings.items():
        mine = given.get(dotted)
        if mine is None or mine == value:
            continue
        if dotted == "launch.np" and mine == 0:
            continue  # 0: as launched
        raise UsageError(
            f"{dotted}={mine!r} in the config conflicts with TF_CONFIG, which gives "
            f"{dotted}={value!r}; give the cluster one way"
        )
    for dotted, value in settings.items():
        section, key = dotted.split(".")
        if dotted != "launch.np":  # checked only: the process is one task, never a launcher
            values[section][key] = value


def is_evaluator(env: Mapping[str, str]) -> bool:
    """True when ``TF_CONFIG`` makes this process an evaluator task."""
    ext = from_env(env)
    return ext is not None and ext.job == EVALUATOR
