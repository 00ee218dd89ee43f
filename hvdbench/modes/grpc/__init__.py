"""The gRPC cluster modes (parameter_server, distributed_replicated; the cluster plumbing
that collective_all_reduce shares): the cluster and its roles, the servers and their
control plane, variable placement, lost workers, the local launch of every task, the
staging buffer and the graph-mode training step."""
