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
GPU ?= 0
CUDA_HOME ?=
NCCL_HOME ?=
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

# The TensorFlow matrix: one exact release per supported minor. `make install TF=2.18`
# selects one; every minor but the default gets its own venv (.venv-tf2.18), so a second
# install never switches an existing one. The default is this one line: the newest release
# that passes every tier here with Horovod (README's install table). A GPU build's default
# is the newest release Horovod builds against unpatched, since the patch is for CPU builds.
TF_DEFAULT := 2.21
TF_DEFAULT_GPU := 2.18
TF_FLAVOR_DEFAULT := $(if $(filter 1,$(GPU)),$(TF_DEFAULT_GPU),$(TF_DEFAULT))
TF ?= $(TF_FLAVOR_DEFAULT)
TF_NEWEST := 2.21
TF_PIN_2.14 := 2.14.1
TF_PIN_2.15 := 2.15.1
TF_PIN_2.16 := 2.16.2
TF_PIN_2.17 := 2.17.1
TF_PIN_2.18 := 2.18.1
TF_PIN_2.19 := 2.19.1
TF_PIN_2.20 := 2.20.0
TF_PIN_2.21 := 2.21.0
TF_SUPPORTED := 2.14 2.15 2.16 2.17 2.18 2.19 2.20 2.21
# Horovod 0.28.1 is built from PyPI for these minors (README's install table: measured)...
# hvdbench/tfcompat.py holds the same lists (tests/unit/test_makefile.py keeps them equal).
HOROVOD_TF := 2.14 2.15 2.16 2.17 2.18
# ... and for these from its checksum-verified sdist, patched first (patches/) in CPU builds:
# Horovod's XLA ops, GPU-only, are left out, since TensorFlow's XLA headers do not compile
# there. GPU builds of these install without Horovod, and --mode.name=horovod says so.
HOROVOD_PATCHED_TF := 2.19 2.20 2.21
HOROVOD_PATCH := patches/horovod-$(HOROVOD_VERSION)-cpu-without-xla-ops.patch
HOROVOD_SDIST_SHA256 := 92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
TF_VERSION := $(TF_PIN_$(TF))
ifeq ($(TF_VERSION),)
  $(error TF=$(TF) is not supported; supported: $(TF_SUPPORTED))
endif
PATCH_HOROVOD := $(if $(filter 1,$(GPU)),,$(filter $(TF),$(HOROVOD_PATCHED_TF)))
WITH_HOROVOD ?= $(if $(filter $(TF),$(HOROVOD_TF))$(PATCH_HOROVOD),1,0)
# From 2.16 on tf.keras is Keras 3; hvdbench uses Keras 2 (tf-keras of the same minor).
TF_MINOR := $(word 2,$(subst ., ,$(TF)))
KERAS_REQ := $(if $(filter 14 15,$(TF_MINOR)),,"tf-keras~=$(TF).0")
VENV ?= $(if $(filter $(TF),$(TF_FLAVOR_DEFAULT)),.venv,.venv-tf$(TF))

VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
HOROVOD_COMMON := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

# Horovod is always built with --no-cache-dir: pip's wheel cache keys a wheel by the sdist
# alone, so a wheel built against another TensorFlow (or without NCCL) would satisfy this
# build and fail at import with undefined symbols.
ifeq ($(GPU),1)
  FLAVOR := gpu
  TF_REQ := tensorflow[and-cuda]==$(TF_VERSION)
  HOROVOD_ENV := $(HOROVOD_COMMON) HOROVOD_GPU_OPERATIONS=NCCL$(if $(CUDA_HOME), HOROVOD_CUDA_HOME=$(CUDA_HOME))$(if $(NCCL_HOME), HOROVOD_NCCL_HOME=$(NCCL_HOME))
  REQUIRED_FEATURES := TensorFlow,MPI,Gloo,NCCL
else
  FLAVOR := cpu
  TF_REQ := tensorflow-cpu==$(TF_VERSION)
  HOROVOD_ENV := $(HOROVOD_COMMON)
  REQUIRED_FEATURES := TensorFlow,MPI,Gloo
endif
HOROVOD_PIP_FLAGS := --no-build-isolation --no-cache-dir --force-reinstall

# TensorBoard of the same minor: summary.dir writes through it and the tests read it back;
# TensorFlow 2.20 and newer no longer install it themselves.
PY_DEPS := "$(TF_REQ)" $(KERAS_REQ) "tensorboard~=$(TF).0" "numpy<2" mpi4py matplotlib
DEV_DEPS := pytest pytest-timeout hypothesis ruff mypy reframe-hpc scikit-learn

# What the venv holds; a venv made for another TensorFlow is never installed over.
VENV_MARK := $(VENV)/.hvdbench-tensorflow
STAMP_SYS := $(VENV)/.stamp-system
STAMP_DEPS := $(VENV)/.stamp-deps-$(FLAVOR)-tf$(TF_VERSION)
STAMP_HVD := $(VENV)/.stamp-horovod-$(FLAVOR)-tf$(TF_VERSION)
STAMP_PKG := $(VENV)/.stamp-hvdbench
STAMP_CHECK := $(VENV)/.stamp-checked-$(FLAVOR)-tf$(TF_VERSION)$(if $(filter 1,$(WITH_HOROVOD)),-horovod)

.PHONY: help install venv-guard test-compat test-compat-distributed install-slurm bench perf test test-unit test-distributed test-slurm test-multinode lint clean

help:
	@echo "make install      $(VENV) with TensorFlow $(TF_VERSION), Horovod $(HOROVOD_VERSION) (GPU=1 for NCCL)"
	@echo "                  TF=2.x picks another TensorFlow ($(TF_SUPPORTED)) in .venv-tf2.x"
	@echo "make test-compat  on TensorFlow $(TF_PIN_$(TF_COMPAT)) (.venv-tf$(TF_COMPAT)): unit tier + the modes' multi-process tests"
	@echo "make bench        install, then a 2-rank Horovod benchmark with synthetic data"
	@echo "make test         install (Slurm too), then all test tiers (each tier's time is printed)"
	@echo "make test-slurm   the Slurm tier alone: a real local Slurm runs the slurm/ scripts"
	@echo "make test-multinode  the multi-node tier alone: Slurm across network namespaces"
	@echo "make perf         the performance suite: ratios against the hardware limit (slow)"
	@echo "make lint         ruff check, ruff format --check, mypy"

install: venv-guard $(STAMP_CHECK)

# Refuses, before touching anything, a venv that holds another TensorFlow (or flavour).
# A venv from before the matrix (no mark, old stamps) holds tensorflow-cpu==2.14.1.
venv-guard:
	@have=$$(cat $(VENV_MARK) 2>/dev/null || { test -e $(VENV)/.stamp-deps-cpu && echo tensorflow-cpu==2.14.1; } || true); \
	if [ -n "$$have" ] && [ "$$have" != "$(TF_REQ)" ]; then \
	  held=$$(echo "$$have" | sed -n 's/.*==\([0-9]*\.[0-9]*\).*/\1/p'); \
	  echo "make: $(VENV) holds $$have; refusing to install $(TF_REQ) into it. Remove $(VENV) first (rm -rf $(VENV)), or name another venv with VENV=; $$have goes into a venv of its own with make install TF=$$held$(if $(filter 1,$(GPU)), GPU=1)" >&2; \
	  exit 2; \
	fi

# Fails loudly unless Keras 2 is active and, with Horovod, `horovodrun --check-build`
# lists every required feature.
$(STAMP_CHECK): $(STAMP_PKG)
	$(VPY) -c 'import sys, hvdbench.tfcompat as t; sys.exit(t.main())'
ifeq ($(WITH_HOROVOD),1)
	$(VENV)/bin/hvdbench check-build --require $(REQUIRED_FEATURES)
endif
	@touch $@

# After the guard: not even the venv is created for a TensorFlow it refuses (also under
# make -k, as in `make test`'s --keep-going, which sub-makes inherit through MAKEFLAGS).
$(STAMP_SYS): | venv-guard
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@touch $@

$(STAMP_DEPS): $(STAMP_SYS) | venv-guard
	@echo '$(TF_REQ)' > $(VENV_MARK)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(PY_DEPS) $(DEV_DEPS)
	@touch $@

HOROVOD_SRC := $(VENV)/horovod-src
$(STAMP_HVD): $(STAMP_DEPS)
ifeq ($(PATCH_HOROVOD),)
	$(HOROVOD_ENV) $(PIP) install $(HOROVOD_PIP_FLAGS) horovod==$(HOROVOD_VERSION)
else
	rm -rf $(HOROVOD_SRC) && mkdir -p $(HOROVOD_SRC)
	$(PIP) download -q --no-deps --no-binary :all: --no-build-isolation -d $(HOROVOD_SRC) horovod==$(HOROVOD_VERSION)
	echo "$(HOROVOD_SDIST_SHA256)  $(HOROVOD_SRC)/horovod-$(HOROVOD_VERSION).tar.gz" | sha256sum -c -
	tar -xzf $(HOROVOD_SRC)/horovod-$(HOROVOD_VERSION).tar.gz -C $(HOROVOD_SRC)
	patch -d $(HOROVOD_SRC)/horovod-$(HOROVOD_VERSION) -p1 --forward < $(HOROVOD_PATCH)
	$(HOROVOD_ENV) $(PIP) install $(HOROVOD_PIP_FLAGS) $(abspath $(HOROVOD_SRC))/horovod-$(HOROVOD_VERSION)
	rm -rf $(HOROVOD_SRC)
endif
	@rm -f $(VENV)/.stamp-horovod-*
	@touch $@

$(STAMP_PKG): $(if $(filter 1,$(WITH_HOROVOD)),$(STAMP_HVD),$(STAMP_DEPS)) pyproject.toml
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
# tests/compat: Keras 3 active anyway is stopped; only a TensorFlow with Keras 3 (>= 2.16) has it.
UNIT_TESTS ?= tests/unit $(if $(KERAS_REQ),tests/compat)
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

# The other end of the matrix from the default (now the newest release, which `make test`
# runs whole): the oldest release, the default until 2026-12, in its own venv. The unit tier
# and the multi-process tests of every mode: Horovod's where it is built, the parameter-server
# fallback, distributed_replicated and collective_all_reduce. TF_COMPAT=2.x picks another.
TF_COMPAT ?= $(firstword $(TF_SUPPORTED))
COMPAT_DISTRIBUTED := $(if $(filter 1,$(WITH_HOROVOD)),tests/distributed/test_horovod.py) tests/distributed/test_parameter_server.py tests/distributed/test_grpc_modes.py tests/distributed/test_graph_faults.py tests/distributed/test_backup_workers_fault.py

test-compat:
	@start=$$(date +%s); rc=0; \
	{ $(MAKE) --no-print-directory install TF=$(TF_COMPAT) && \
	  $(MAKE) --no-print-directory test-unit test-compat-distributed TF=$(TF_COMPAT); } || rc=$$?; \
	echo "=== test-compat (TensorFlow $(TF_PIN_$(TF_COMPAT))): $$(( $$(date +%s) - start )) s (exit $$rc) ==="; \
	exit $$rc

test-compat-distributed:
	$(call tier,compat-distributed,$(COMPAT_DISTRIBUTED))

lint:
	$(VENV)/bin/ruff check hvdbench tests bench
	$(VENV)/bin/ruff format --check hvdbench tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
