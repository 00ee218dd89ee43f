"""ReFrame checks of hvdbench: one run per mode and number of compute ranks.

    reframe -C site_settings.py -c reframe/hvdbench_checks.py -r
    reframe ... -n 'hvdbench_check%mode=horovod%ranks=2' -S python=/opt/hvdbench/.venv/bin/python

Sanity is the run's own record (status ``complete`` and its totals present), not a line
of text; the performance variables are read from the output, as site checks read
Horovod's synthetic benchmark: ``total_img_s`` from ``Total img/sec on N CPU(s)|GPU(s)``
(hvdbench's measured total: all images over the slowest rank's time) and ``per_device_img_s``
from ``Img/sec per CPU|GPU``. Set references per system with ``reference`` as usual.

Each rank is one task of the partition's launcher (``srun``: ``--mpi=`` is added, see
``srun_mpi``). The ps modes start ``num_ps`` ps tasks on top of the compute ranks, with
roles from the ranks.
"""

from __future__ import annotations

import json
import os

import reframe as rfm
import reframe.utility.sanity as sn
import reframe.utility.typecheck as typ
from reframe.core.builtins import (
    parameter,
    performance_function,
    run_after,
    run_before,
    sanity_function,
    variable,
)

PS_MODES = ("parameter_server", "distributed_replicated")
RECORDS = "hvdbench-records"
RATE = r"(?:CPU|GPU)"


@rfm.simple_test
class hvdbench_check(rfm.RunOnlyRegressionTest):
    """hvdbench's synthetic-data benchmark; the figure is hvdbench's measured total."""

    mode = parameter(["horovod", "parameter_server", "collective_all_reduce"])
    ranks = parameter([1, 2])

    #: The Python that has hvdbench (a venv's ``bin/python``).
    python = variable(str, value="python3")
    #: A site config file for ``hvdbench run`` (empty: hvdbench's defaults).
    config_file = variable(str, value="")
    model = variable(str, value="trivial")
    per_device_batch_size = variable(int, value=32)
    num_warmup_steps = variable(int, value=2)
    num_steps = variable(int, value=20)
    #: ps tasks of the ps modes, on top of the compute ranks.
    num_ps = variable(int, value=1)
    #: srun's --mpi plugin (pmix; pmi2 where Open MPI has no PMIx).
    srun_mpi = variable(str, value="pmix")
    #: More ``--section.key=value`` overrides.
    extra_options = variable(typ.List[str], value=[])

    valid_systems = ["*"]
    valid_prog_environs = ["*"]
    time_limit = "10m"
    tags = {"hvdbench", "benchmark"}
    keep_files = [RECORDS]  # the record goes to the output directory with the logs

    @run_after("init")
    def set_description(self) -> None:
        self.descr = f"hvdbench {self.mode}, {self.ranks} compute rank(s), model {self.model}"

    @run_before("run")
    def set_command(self) -> None:
        ps = self.num_ps if self.mode in PS_MODES else 0
        self.num_tasks = self.ranks + ps
        self.num_tasks_per_node = self.num_tasks
        self.executable = self.python
        opts = ["-m", "hvdbench", "run"]
        if self.config_file:
            opts.append(self.config_file)
        opts += [
            f"--mode.name={self.mode}",
            f"--model.name={self.model}",
            f"--train.per_device_batch_size={self.per_device_batch_size}",
            f"--train.num_warmup_steps={self.num_warmup_steps}",
            f"--train.num_steps={self.num_steps}",
            f"--output.dir={RECORDS}",
            f"--launch.np={self.ranks}",
        ]
        if ps:
            opts.append(f"--ps.num_ps={ps}")
        self.executable_opts = opts + list(self.extra_options)
        if self.job.launcher.registered_name == "srun":
            self.job.launcher.options += [f"--mpi={self.srun_mpi}"]

    def record(self) -> dict:
        """The one record the run wrote."""
        d = os.path.join(self.stagedir, RECORDS)
        names = sorted(n for n in os.listdir(d) if n.endswith(".json")) if os.path.isdir(d) else []
        if len(names) != 1:
            raise sn.SanityError(f"expected one record in {d}, found {names}")
        with open(os.path.join(d, names[0])) as f:
            return json.load(f)

    @sanity_function
    def record_is_complete(self):  # type: ignore[no-untyped-def]
        rec = self.record()
        totals = rec.get("totals") or {}
        return sn.all(
            [
                sn.assert_eq(rec.get("status"), "complete", msg="record status is {0}, not {1}"),
                sn.assert_eq(rec.get("mode"), self.mode),
                sn.assert_eq(totals.get("num_ranks"), self.ranks),
                sn.assert_gt(totals.get("total_images_per_sec", 0), 0),
                sn.assert_found(rf"Total img/sec on {self.ranks} {RATE}\(s\):", self.stdout),
            ]
        )

    @performance_function("img/s")
    def total_img_s(self):  # type: ignore[no-untyped-def]
        return sn.extractsingle(
            rf"Total img/sec on {self.ranks} {RATE}\(s\): (\S+) \S+", self.stdout, 1, float
        )

    @performance_function("img/s")
    def per_device_img_s(self):  # type: ignore[no-untyped-def]
        return sn.extractsingle(rf"Img/sec per {RATE}: (\S+) \S+", self.stdout, 1, float)
