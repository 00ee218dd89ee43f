"""The sbatch scripts, shipped with the package (``slurm/`` in a checkout links here)."""
