"""Clusters that tests and studies build on one machine: a one-node Slurm configuration
and a multi-node Slurm cluster of network namespaces. Not used by a run."""
