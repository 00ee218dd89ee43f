"""One task of a 1 ps + 2 worker cluster that runs exactly one synchronous SGD step.

Run by tests/distributed/test_parameter_server.py as three real processes. The chief
saves the variables before the step and after the global step has advanced, so that the
test can compare them with a single-process step on the two workers' batches.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from hvdbench import config
from hvdbench.launch import topology
from hvdbench.modes import get


def main() -> int:
    job, index, ps_hosts, worker_hosts, out = sys.argv[1:6]
    cfg = config.load(
        None,
        [
            "--mode.name=parameter_server",
            "--model.name=mnist_mlp",
            "--train.optimizer=sgd",
            "--train.learning_rate=0.5",
            "--train.per_device_batch_size=8",
            "--train.weight_decay=0.001",
            "--launch.np=2",
            f"--cluster.ps_hosts={ps_hosts}",
            f"--cluster.worker_hosts={worker_hosts}",
            f"--cluster.job_name={job}",
            f"--cluster.task_index={index}",
            "--ps.idle_timeout_s=60",
        ],
    )
    mode = get("parameter_server")(cfg, topology.detect(os.environ))
    mode.setup()  # a ps task serves here until the chief stops it, then exits
    try:
        mode.build()
        mode.initialize()
        before = mode.read_variables()
        mode.step()
        deadline = time.monotonic() + 60
        while mode.read_global_step() < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the synchronous update never happened")
            time.sleep(0.05)
        after = mode.read_variables()
        mode.gather({})
        if mode.is_chief:
            np.savez(
                out,
                **{f"before_{i}": v for i, v in enumerate(before)},
                **{f"after_{i}": v for i, v in enumerate(after)},
            )
    finally:
        mode.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
