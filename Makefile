# Two commands set everything up on a fresh machine: `make serve` and `make test`.
VENV     ?= .venv
PYTHON   ?= python3
DATA_DIR ?= ./data
HOST     ?= 127.0.0.1
PORT     ?= 6443
# where the control plane runs: in-process | process (a second process) | none
CONTROLLERS ?= in-process
STAMP    := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: serve test test-fast lint bench kubeconfig clean

# chromium: Debian's, for the console's browser tests (Playwright drives it; no browser download).
APT_PACKAGES := openssh-client qemu-system-x86 qemu-utils kmod debootstrap e2fsprogs chromium \
  nftables iproute2 conntrack

$(STAMP): pyproject.toml
	@for tool in ssh-keygen qemu-system-x86_64 qemu-img debootstrap mkfs.ext4 modprobe chromium \
	    nft ip conntrack; do \
	  command -v $$tool >/dev/null || missing=1; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES); fi
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

serve: $(STAMP)
	$(VENV)/bin/evroc-compute serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) \
	  --controllers $(CONTROLLERS)

kubeconfig: $(STAMP)
	@$(VENV)/bin/evroc-compute kubeconfig --data-dir $(DATA_DIR) --server https://$(HOST):$(PORT)

# Modules held to mypy --strict (the rest follows as it is touched).
STRICT := src/evroc_compute/runtime src/evroc_compute/hosts/lifecycle.py src/evroc_compute/hosts/network \
  src/evroc_compute/hosts/driver.py src/evroc_compute/hosts/agent.py src/evroc_compute/hosts/console.py \
  src/evroc_compute/hosts/drivers/sim.py src/evroc_compute/hosts/drivers/qemu/driver.py \
  src/evroc_compute/controllers/vmstatus.py src/evroc_compute/controllers/vm.py \
  src/evroc_compute/server/fairness.py src/evroc_compute/server/audit.py \
  src/evroc_compute/server/auth src/evroc_compute/server/console/agents.py \
  src/evroc_compute/api/consolelog.py src/evroc_compute/client/transport.py \
  src/evroc_compute/client/http.py src/evroc_compute/controlplane.py src/evroc_compute/supervisor.py \
  src/evroc_compute/client/channel.py src/evroc_compute/server/channel.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/mypy --strict --follow-imports=silent $(STRICT)
	$(VENV)/bin/lint-imports

# Everything, slow suites included (what CI runs).
test: lint
	$(VENV)/bin/pytest -q

# The fast part only: skips suites marked slow (real VMs, PostgreSQL, load).
test-fast: lint
	$(VENV)/bin/pytest -q -m "not slow"

# `make bench` only: wrk (bench/wrk.py's load generator) and the `bench` extra (moto's EC2 server,
# the peer it measures beside ours).
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	@rm -f $(VENV)/.bench-installed-* && touch $@

bench: $(BENCH_STAMP)
	$(VENV)/bin/python bench/auth.py
	$(VENV)/bin/python bench/run.py
	$(VENV)/bin/python bench/wrk.py
	$(VENV)/bin/python bench/curve.py
	$(VENV)/bin/python bench/fleet.py --postgres
	$(VENV)/bin/python bench/ha.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .ruff_cache
