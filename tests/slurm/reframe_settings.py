"""ReFrame's settings for the Slurm tier's one-node cluster (tests/slurm/cluster.py).

Jobs go through ``sbatch`` to partition ``debug``; their state is polled with ``squeue``,
because the test cluster keeps no accounting for ``sacct``. Ranks start with ``srun``.
Clients find the cluster through ``SLURM_CONF``, which the environment carries.
"""

site_configuration = {
    "systems": [
        {
            "name": "hvdslurm",
            "descr": "the Slurm tier's one-node cluster",
            "hostnames": [".*"],
            "modules_system": "nomod",
            "partitions": [
                {
                    "name": "debug",
                    "scheduler": "squeue",
                    "launcher": "srun",
                    "access": ["--partition=debug"],
                    "environs": ["builtin"],
                    "max_jobs": 2,
                }
            ],
        }
    ],
    "environments": [{"name": "builtin", "cc": "cc", "cxx": "", "ftn": ""}],
    "general": [{"check_search_recursive": False}],
}
