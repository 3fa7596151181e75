# The two commands of the README: `make demo` (set up + run the main job) and `make test` (set up + test).
ifndef PYTHON
PYTHON := $(shell command -v python3.11 || command -v python3)
endif
VENV ?= .venv
BIN := $(VENV)/bin
# DeepSpeed builds a small C++ extension on first use and needs `ninja`: the venv's own copy will do.
export PATH := $(abspath $(BIN)):$(PATH)
STAMP := $(VENV)/.installed
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: install data demo test hosts-tools bench report clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -c requirements/constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Downloads the benchmark tables into the data directory unless they are there and verified.
data: install
	$(BIN)/archsweep data fetch

demo: data
	$(BIN)/archsweep demo

# The default run, then the long suites: reliability (faults and load: tests/test_faults.py, tests/test_load.py)
# and end-to-end (the reproduction report: tests/test_reproduce.py).
test: data hosts-tools
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m "reliability or e2e"

# The long suite's test hosts (tests/test_onprem.py, cluster/hosts.py) need sshd, rsync and ip: as root on Debian, install
# them where missing, with services kept from starting (policy-rc.d), so no sshd listens on this machine's network.
hosts-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! { [ -x /usr/sbin/sshd ] && command -v rsync >/dev/null && command -v ip >/dev/null; }; then \
	  made=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made=1; }; \
	  { apt-get install -yq openssh-server rsync iproute2 || { apt-get update -q && apt-get install -yq openssh-server rsync iproute2; }; } >/dev/null; \
	  status=$$?; [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$status; fi

bench: data
	$(BIN)/python -m bench.enumerate_nb101 --write
	$(BIN)/python -m bench.vqvae --write
	$(BIN)/python -m bench.ceiling --write
	$(BIN)/python -m bench.lm --write
	$(BIN)/python -m bench.representations --write
	$(BIN)/python -m bench.zero --write
	$(BIN)/python -m bench.search --write
	$(BIN)/python -m bench.optimum --write
	$(BIN)/python -m bench.load --write
	$(BIN)/python -m bench.overhead --write
	$(BIN)/python -m bench.startup --write
	$(BIN)/python -m bench.stages --write
	$(BIN)/python -m bench.wandb_cost --write
	$(BIN)/python -m bench.gpu --write     # on a CPU: the dry run (block gpu-dry-run); bench/gpu.sh on a GPU machine

# The reproduction report (docs/REPORT.md, docs/report/cpu/) from scratch: fresh results and caches, 2-core CPU size.
report: data
	$(BIN)/python -m bench.reproduce sweeps/reproduce-cpu.yaml --fresh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
