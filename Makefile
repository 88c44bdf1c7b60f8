# Two entry points for a fresh machine: `make sim` (the main job) and `make test`.
# Each creates .venv and installs what it needs the first time.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: sim test lint bench clean program program-check localnet

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
	$(VENV)/bin/eranos sim

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) scripts/bench_optim.py --json
	$(PY) scripts/bench_chain.py --json

localnet: $(STAMP)
	$(VENV)/bin/eranos localnet

# The on-chain program: Debian clang (apt) compiles C to BPF, chain/linker.py (stdlib Python)
# links the sBPF v0 shared object. eranos.so is committed, so only program authors need clang.
BPF_CFLAGS := -target bpf -mcpu=v2 -O2 -fno-builtin -ffreestanding -fPIC -Wall -Werror
PROGRAM_SRC := $(sort $(wildcard chain/program/*.c))
PROGRAM_DEPS := $(PROGRAM_SRC) $(wildcard chain/program/*.h) chain/linker.py

build/program/eranos.so: $(PROGRAM_DEPS)
	command -v clang >/dev/null || { apt-get update -q && apt-get install -y -q clang; }
	mkdir -p build/program
	for src in $(PROGRAM_SRC); do clang $(BPF_CFLAGS) -c $$src -o build/program/$$(basename $$src .c).o || exit 1; done
	$(PYTHON) -m chain.linker $(patsubst chain/program/%.c,build/program/%.o,$(PROGRAM_SRC)) -o $@

program: build/program/eranos.so
	cp build/program/eranos.so chain/program/eranos.so

# CI: the committed program must be exactly what the committed sources build.
program-check: build/program/eranos.so
	cmp build/program/eranos.so chain/program/eranos.so || { echo "chain/program/eranos.so is stale: run make program"; exit 1; }

clean:
	rm -rf $(VENV) build
