# hvdbench: install, test, benchmark. `make help` lists the targets.
#
#   make bench    install what is missing, then a 2-rank Horovod benchmark on this machine
#   make test     install what is missing, then every test tier, timed
#
# CPU build (default): tensorflow-cpu, Horovod with MPI + Gloo.
# GPU build for clusters: make install GPU=1 [CUDA_HOME=...] [NCCL_HOME=...]
#   tensorflow[and-cuda] of the same version, Horovod with NCCL operations, built with
#   pip --no-cache-dir (pip's wheel cache ignores HOROVOD_* flags, so a cached CPU wheel
#   would otherwise satisfy a GPU build), and a check that --check-build shows NCCL.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
GPU ?= 0
CUDA_HOME ?=
NCCL_HOME ?=
TF_VERSION := 2.14.1
HOROVOD_VERSION := 0.28.1
APT_PACKAGES := libopenmpi-dev openmpi-bin
# The Slurm and multi-node tiers: Slurm and munge, iproute2 + util-linux (ip, tc, nsenter,
# unshare for the namespace nodes), and MPICH's Hydra (mpiexec.mpich) for the launcher tests.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge iproute2 util-linux mpich
# Open MPI stays the default MPI: Horovod and mpi4py are built against it and every tier runs
# `mpirun`. MPICH is used only as mpiexec.mpich; if its packages took over an alternative,
# install-slurm sets it back (update-alternatives --set).
OPENMPI_ALTERNATIVES := mpirun=/usr/bin/mpirun.openmpi mpi=/usr/bin/mpicc.openmpi \
  mpi-x86_64-linux-gnu=/usr/lib/x86_64-linux-gnu/openmpi/include
PYTEST_ARGS ?=

VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
HOROVOD_COMMON := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

ifeq ($(GPU),1)
  FLAVOR := gpu
  TF_REQ := tensorflow[and-cuda]==$(TF_VERSION)
  HOROVOD_ENV := $(HOROVOD_COMMON) HOROVOD_GPU_OPERATIONS=NCCL$(if $(CUDA_HOME), HOROVOD_CUDA_HOME=$(CUDA_HOME))$(if $(NCCL_HOME), HOROVOD_NCCL_HOME=$(NCCL_HOME))
  HOROVOD_PIP_FLAGS := --no-build-isolation --no-cache-dir --force-reinstall --no-deps
  REQUIRED_FEATURES := TensorFlow,MPI,Gloo,NCCL
else
  FLAVOR := cpu
  TF_REQ := tensorflow-cpu==$(TF_VERSION)
  HOROVOD_ENV := $(HOROVOD_COMMON)
  HOROVOD_PIP_FLAGS := --no-build-isolation
  REQUIRED_FEATURES := TensorFlow,MPI,Gloo
endif

PY_DEPS := "$(TF_REQ)" "numpy<2" mpi4py matplotlib
DEV_DEPS := pytest pytest-timeout hypothesis ruff mypy reframe-hpc scikit-learn

STAMP_SYS := $(VENV)/.stamp-system
STAMP_DEPS := $(VENV)/.stamp-deps-$(FLAVOR)
STAMP_HVD := $(VENV)/.stamp-horovod-$(FLAVOR)
STAMP_PKG := $(VENV)/.stamp-hvdbench
STAMP_CHECK := $(VENV)/.stamp-checked-$(FLAVOR)

.PHONY: help install install-slurm bench perf test test-unit test-distributed test-slurm test-multinode lint clean

help:
	@echo "make install      venv with TensorFlow $(TF_VERSION), Horovod $(HOROVOD_VERSION) (GPU=1 for NCCL)"
	@echo "make bench        install, then a 2-rank Horovod benchmark with synthetic data"
	@echo "make test         install (Slurm too), then all test tiers (each tier's time is printed)"
	@echo "make test-slurm   the Slurm tier alone: a real local Slurm runs the slurm/ scripts"
	@echo "make test-multinode  the multi-node tier alone: Slurm across network namespaces"
	@echo "make perf         the performance suite: ratios against the hardware limit (slow)"
	@echo "make lint         ruff check, ruff format --check, mypy"

install: $(STAMP_CHECK)

# Fails loudly unless `horovodrun --check-build` lists every required feature.
$(STAMP_CHECK): $(STAMP_PKG)
	$(VENV)/bin/hvdbench check-build --require $(REQUIRED_FEATURES)
	@touch $@

$(STAMP_SYS):
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@touch $@

$(STAMP_DEPS): $(STAMP_SYS)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(PY_DEPS) $(DEV_DEPS)
	@touch $@

$(STAMP_HVD): $(STAMP_DEPS)
	$(HOROVOD_ENV) $(PIP) install $(HOROVOD_PIP_FLAGS) horovod==$(HOROVOD_VERSION)
	@rm -f $(VENV)/.stamp-horovod-*
	@touch $@

$(STAMP_PKG): $(STAMP_HVD) pyproject.toml
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $@

install-slurm:
	@if ! dpkg -s $(SLURM_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing $(SLURM_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_PACKAGES); \
	fi
	@for pair in $(OPENMPI_ALTERNATIVES); do \
	  name=$${pair%%=*}; want=$${pair#*=}; \
	  now=$$(update-alternatives --query $$name 2>/dev/null | sed -n 's/^Value: //p'); \
	  if [ -n "$$now" ] && [ "$$now" != "$$want" ]; then \
	    echo "setting the $$name alternative back to Open MPI ($$now -> $$want)"; \
	    update-alternatives --set $$name $$want; \
	  fi; \
	done

bench: install
	$(VENV)/bin/hvdbench run --np 2

# A benchmark, not a test: ratios measured side by side in one run (docs/PERFORMANCE.md).
PERF_ARGS ?=
perf: install
	$(VPY) bench/perf.py $(PERF_ARGS)

# Each tier prints its slowest tests (how close they come to pytest-timeout's 300 s on a
# slow machine), its wall time and its passed, skipped and failed counts (from pytest's
# JUnit XML); a failing tier fails `make test`. A tier asked for by name must run: with
# HVDBENCH_NO_SKIP=1 (tests/no_skip.py) a skipped test is a failure, as under CI=true.
UNIT_TESTS ?= tests/unit
DISTRIBUTED_TESTS ?= tests/distributed
SLURM_TESTS ?= tests/slurm
MULTINODE_TESTS ?= tests/multinode

define tier
	@echo "=== tier $(1) ==="; start=$$(date +%s); rc=0; \
	xml=$$(mktemp --suffix=.xml); \
	HVDBENCH_NO_SKIP=1 $(VPY) -m pytest -p tests.no_skip --junitxml=$$xml --durations=8 $(2) $(PYTEST_ARGS) || rc=$$?; \
	counts=$$($(VPY) tests/tier_counts.py $$xml); rm -f $$xml; \
	echo "=== tier $(1): $$(( $$(date +%s) - start )) s (exit $$rc): $$counts ==="; \
	exit $$rc
endef

TEST_TIERS := test-unit test-distributed test-slurm test-multinode

# --keep-going: a failing tier does not hide the tiers after it; `make test` still fails.
test: install install-slurm
	@start=$$(date +%s); rc=0; \
	$(MAKE) --no-print-directory --keep-going $(TEST_TIERS) || rc=$$?; \
	echo "=== all tiers: $$(( $$(date +%s) - start )) s (exit $$rc) ==="; \
	exit $$rc

test-unit:
	$(call tier,unit,$(UNIT_TESTS))

# install-slurm: MPICH's mpiexec.mpich for the launcher tests (tests/distributed/test_launchers.py).
test-distributed: install-slurm
	$(call tier,distributed,$(DISTRIBUTED_TESTS))

# A real one-node Slurm (munged, slurmctld, slurmd started by tests/slurm/conftest.py).
test-slurm: install-slurm
	$(call tier,slurm,$(SLURM_TESTS))

# Slurm across network namespaces on a bridge (hvdbench/testbed/netcluster.py; docs/multinode.md).
test-multinode: install-slurm
	$(call tier,multinode,$(MULTINODE_TESTS))

lint:
	$(VENV)/bin/ruff check hvdbench tests bench
	$(VENV)/bin/ruff format --check hvdbench tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
