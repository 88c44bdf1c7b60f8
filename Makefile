# Two entry points for a fresh machine: `make sim` (the main job) and `make test`.
# Each creates .venv and installs what it needs the first time.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: sim test lint bench clean

$(STAMP): pyproject.toml
	# libp2p's fastecdsa compiles against GMP: gcc and libgmp-dev come from apt (CI runs as root)
	dpkg -s libgmp-dev >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q gcc libgmp-dev; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The pin comes first so nothing later can pull a newer torch; on this kind of machine it
	# resolves to the local CPU wheel, on a GPU box to the registry's CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,bench]' torch==2.13.0
	touch $(STAMP)

sim: $(STAMP)
	$(PY) scripts/bench_optim.py

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) scripts/bench_optim.py --json

clean:
	rm -rf $(VENV)
