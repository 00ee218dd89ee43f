#!/usr/bin/env bash
# Run hvdbench on NP ranks of this machine (or HOSTS) through mpirun.
#   launch/mpirun.sh NP [CONFIG] [--section.key=value ...]
# Environment: HOSTS (e.g. "node1:4,node2:4"), IFACE (network interface for MPI traffic).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
np="${1:?usage: launch/mpirun.sh NP [CONFIG] [--section.key=value ...]}"; shift
exec "${HVDBENCH_PYTHON:-$here/.venv/bin/python}" -m hvdbench run --np "$np" \
  --launch.launcher=mpirun --launch.hosts="${HOSTS:-}" \
  --launch.network_interface="${IFACE:-}" "$@"
