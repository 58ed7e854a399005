# Ferry — developer entrypoints. `make test` and `make demo` run `setup` first; setup is idempotent.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ferry-installed
PACKAGES := ferry workflows activities workers cli devstack

.PHONY: setup test test-fast demo lint bench clean system-deps cosign

setup: $(STAMP) system-deps cosign

# Reinstall only when the dependency set changes, so a second `make setup` is quick and changes nothing.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.2"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

# Debian's CNCF distribution registry: the real OCI registry for the local stack.
system-deps:
	@if command -v docker-registry >/dev/null 2>&1; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "setup: installing Debian's docker-registry (CNCF distribution)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; }; \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
	  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; \
	else \
	  echo "setup: the OCI registry binary 'docker-registry' is missing: install Debian/Ubuntu's docker-registry package (apt-get install docker-registry) or put CNCF distribution 2.8 on PATH as docker-registry" >&2; exit 1; \
	fi


# Real cosign (Sigstore), built from source with Go into the user cache: the tests check that Ferry's
# signatures verify with it and that its signatures verify with Ferry. ~7.5 min cold on 2 cores; a no-op
# when the binary is there.
COSIGN_VERSION := v2.6.5
COSIGN_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ferry/tools/cosign/$(COSIGN_VERSION)
cosign:
	@if [ -x "$(COSIGN_DIR)/cosign" ]; then exit 0; fi; \
	command -v go >/dev/null 2>&1 || { echo "setup: Go is needed to build cosign $(COSIGN_VERSION) (https://go.dev/dl/)" >&2; exit 1; }; \
	echo "setup: building cosign $(COSIGN_VERSION) with Go into $(COSIGN_DIR) (about 7-8 minutes cold on 2 cores)"; \
	mkdir -p "$(COSIGN_DIR)" && \
	GOBIN="$(COSIGN_DIR)" go install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)

# NB: pytest exits 5 when nothing was collected; that is a failure here, and so is a run that passed nothing.
test: setup
	@set -o pipefail; $(BIN)/python -m pytest -q -rfE $(PYTEST_ARGS) 2>&1 | tee .pytest-output.txt; rc=$$?; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	grep -Eq '[0-9]+ passed' .pytest-output.txt || { echo "make test: no test passed" >&2; exit 1; }

demo: setup
	$(BIN)/python -m cli.demo

lint: setup
	$(BIN)/ruff check $(PACKAGES) tests bench
	$(BIN)/mypy $(PACKAGES)

bench: setup
	@mkdir -p bench/results
	$(BIN)/python bench/kube_emulator.py > bench/results/kube_emulator.json
	$(BIN)/python bench/reconcile.py > bench/results/reconcile.json
	@echo "bench: results in bench/results/ (figures: bench/README.md)"

clean:
	-$(BIN)/ferry dev down 2>/dev/null
	rm -rf $(VENV) .ferry .pytest-output.txt
