#!/usr/bin/env bash
# Run hvdbench on NP ranks of this machine (or HOSTS) through horovodrun.
#   launch/horovodrun.sh NP [CONFIG] [--section.key=value ...]
# Environment: HOSTS (e.g. "node1:4,node2:4"), CONTROLLER (gloo|mpi, default gloo).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
np="${1:?usage: launch/horovodrun.sh NP [CONFIG] [--section.key=value ...]}"; shift
exec "${HVDBENCH_PYTHON:-$here/.venv/bin/python}" -m hvdbench run --np "$np" \
  --launch.launcher=horovodrun --launch.horovodrun_controller="${CONTROLLER:-gloo}" \
  --launch.hosts="${HOSTS:-}" "$@"
