"""Starting a job and knowing one's place in it: who am I (topology), the pure argv
builders of mpirun/horovodrun/srun/sbatch and the one place they are run, each rank's
network interface, and Horovod's build check. No TensorFlow."""
