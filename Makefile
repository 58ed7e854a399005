# Ferry — developer entrypoints. `make test` and `make demo` run `setup` first; setup is idempotent.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ferry-installed
PACKAGES := ferry workflows activities workers cli devstack

.PHONY: bytecode controlplane setup test test-unit demo lint bench clean system-deps cosign helm sops gateway-api ui-deps temporal-server chaos

setup: $(STAMP) system-deps cosign helm sops gateway-api controlplane ui-deps bytecode

# Bytecode for Ferry's own packages, even where PYTHONDONTWRITEBYTECODE is set: the workflow sandbox re-imports a
# workflow's module for every workflow it runs, and without a .pyc it recompiles the source each time (about half
# of a worker's CPU per new environment). Only changed files are recompiled; an installed package (pip, the
# Dockerfile) has its .pyc already.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q $(PACKAGES) >/dev/null

# Reinstall only when the dependency set changes, so a second `make setup` is quick and changes nothing.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.2"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

# Debian packages the tests run for real: the CNCF distribution registry (docker-registry), Prometheus Alertmanager
# (the alerts' Alertmanager provider, tests/workflows/test_alerts.py), Prometheus (`ferry dev up`'s, and what rollout
# analysis queries in tests/activities/test_prometheus_query.py) and chromium (the browser test of the Temporal
# UI, tests/e2e/test_ui.py; playwright-core drives it and never downloads a browser) and npm (command:package pairs).
SYSTEM_PACKAGES := docker-registry:docker-registry prometheus-alertmanager:prometheus-alertmanager \
  prometheus:prometheus chromium:chromium npm:npm
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "setup: installing Debian's$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }; \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
	  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "setup: missing$$missing: install them with your package manager (Debian/Ubuntu: apt-get install$$missing; docker-registry is CNCF distribution 2.8)" >&2; exit 1; \
	fi

# playwright-core (pinned in tests/ui/package-lock.json) into tests/ui/node_modules, for the browser test; no browser
# download (it drives the system chromium). Reinstalled only when the lock file changes.
UI_STAMP := tests/ui/node_modules/.ferry-installed
ui-deps: $(UI_STAMP)
$(UI_STAMP): tests/ui/package.json tests/ui/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "setup: npm is needed for the browser test's playwright-core (apt-get install npm)" >&2; exit 1; }
	cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
	@touch $(UI_STAMP)


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

# Real Helm v4, built from its Go module into the user cache: the worker renders charts with it (activities/helm/)
# and the tests check its output and its OCI format. helm's go.mod has no replace directive, so `go install M@V`
# works as is; the ldflag sets `helm version` and `.Capabilities.HelmVersion` (helm's own Makefile sets the same).
# Measured: 143 s on this shared 2-core machine (Go build cache already holding the k8s deps of the other tools;
# budget ~5-7 min on an empty cache); a no-op when the binary is there.
HELM_VERSION := v4.3.2
HELM_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ferry/tools/helm/$(HELM_VERSION)
helm:
	@if [ -x "$(HELM_DIR)/helm" ]; then exit 0; fi; \
	command -v go >/dev/null 2>&1 || { echo "setup: Go is needed to build helm $(HELM_VERSION) (https://go.dev/dl/)" >&2; exit 1; }; \
	echo "setup: building helm $(HELM_VERSION) with Go into $(HELM_DIR) (about 2-7 minutes cold on 2 cores)"; \
	mkdir -p "$(HELM_DIR)" && \
	CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$(HELM_DIR)" go install -trimpath \
	  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)" helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

# SOPS and age (age-keygen), built from their Go modules like helm: the worker decrypts a release's SOPS files
# with them (docs/secrets.md); FERRY_SOPS / FERRY_AGE_KEYGEN point elsewhere. ~5-9 min cold on 2 cores.
SOPS_VERSION := v3.13.3
AGE_VERSION := v1.3.2
TOOLS_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ferry/tools
sops:
	@if [ -x "$(TOOLS_DIR)/sops/$(SOPS_VERSION)/sops" ] && [ -x "$(TOOLS_DIR)/age/$(AGE_VERSION)/age-keygen" ]; then exit 0; fi; \
	command -v go >/dev/null 2>&1 || { echo "setup: Go is needed to build sops $(SOPS_VERSION) and age $(AGE_VERSION) (https://go.dev/dl/)" >&2; exit 1; }; \
	echo "setup: building age $(AGE_VERSION) and sops $(SOPS_VERSION) with Go into $(TOOLS_DIR) (about 5-9 minutes cold on 2 cores)"; \
	mkdir -p "$(TOOLS_DIR)/age/$(AGE_VERSION)" "$(TOOLS_DIR)/sops/$(SOPS_VERSION)" && \
	CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$(TOOLS_DIR)/age/$(AGE_VERSION)" go install -trimpath -ldflags "-s -w" \
	  filippo.io/age/cmd/age@$(AGE_VERSION) filippo.io/age/cmd/age-keygen@$(AGE_VERSION) && \
	CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$(TOOLS_DIR)/sops/$(SOPS_VERSION)" go install -trimpath -ldflags "-s -w" \
	  github.com/getsops/sops/v3/cmd/sops@$(SOPS_VERSION)

# The Gateway API's standard-channel CRDs (HTTPRoute v1 and its kin), from the pinned Go module into the user cache:
# `ferry dev up` and the tests' `gateway_api` fixture install them (devstack/gateway_api.py); the rollout's HTTPRoute
# needs the kind. Seconds (a module download, no build); a no-op when present. NB: config/crd/standard/ also holds
# the ValidatingAdmissionPolicy safe-upgrades.gateway.networking.k8s.io and its binding (one file): left out on
# purpose. It guards a cluster operator's CRD upgrades (no experimental channel over standard, no downgrade), which
# is the cluster's business, not Ferry's; and it matches every CRD create/update on the API server, which the shared
# test control plane's other tests (their own CRDs) would then all pass through.
GATEWAY_API_VERSION := v1.6.3
GATEWAY_API_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ferry/gateway-api/$(GATEWAY_API_VERSION)
gateway-api:
	@if [ -f "$(GATEWAY_API_DIR)/gateway.networking.k8s.io_httproutes.yaml" ]; then exit 0; fi; \
	command -v go >/dev/null 2>&1 || { echo "setup: Go is needed to fetch the Gateway API $(GATEWAY_API_VERSION) module (https://go.dev/dl/)" >&2; exit 1; }; \
	dir=$$(cd / && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json sigs.k8s.io/gateway-api@$(GATEWAY_API_VERSION) | \
	  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$$/\1/p'); \
	[ -d "$$dir/config/crd/standard" ] || { echo "setup: go mod download sigs.k8s.io/gateway-api@$(GATEWAY_API_VERSION) gave no config/crd/standard ($$dir)" >&2; exit 1; }; \
	echo "setup: Gateway API $(GATEWAY_API_VERSION) standard CRDs into $(GATEWAY_API_DIR)"; \
	mkdir -p "$(GATEWAY_API_DIR).tmp" && \
	for f in "$$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do \
	  case "$$f" in *_vap_*) continue;; esac; install -m 0644 "$$f" "$(GATEWAY_API_DIR).tmp/"; done && \
	rm -rf "$(GATEWAY_API_DIR)" && mv "$(GATEWAY_API_DIR).tmp" "$(GATEWAY_API_DIR)"

# The Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) built from Kubernetes' own Go modules
# (devstack/controlplane: go.mod generated by gen-go-mod.sh) into ~/.cache/ferry/kube/<version>/, with progress;
# ~12 min on 2 cores the first time, a no-op afterwards.
controlplane:
	@devstack/controlplane/build.sh

# Temporal's production topology, opt-in (`make setup` does not build it): the Temporal server, its SQL schema tool
# and the Web UI server, built from their Go modules into ~/.cache/ferry/temporal/<version>/ with progress; ~10 min
# on 2 cores the first time, a no-op afterwards. `ferry dev up --temporal cluster` and `make chaos` need it.
temporal-server:
	@devstack/temporal_server/build.sh

# Flux's source-controller and kustomize-controller v1.9.6, for the side-by-side tests and bench/flux_vs_ferry.py,
# opt-in (`make setup` does not build it): built from their Go modules through a wrapper module (devstack/flux:
# go.mod generated by gen-go-mod.sh) into ~/.cache/ferry/flux/<version>/ with progress; a no-op afterwards.
.PHONY: flux
flux:
	@devstack/flux/build.sh

# The fault tier (tests/chaos): `ferry dev up --temporal cluster` end to end, and faults that lose nothing on the
# cluster topology (kill -9 a worker and the server, restart PostgreSQL, registry and API server outages); then the
# e2e promotion story on the cluster (FERRY_TEST_TEMPORAL=cluster). Not in `make test` (tests/chaos is collected
# only with FERRY_CHAOS=1); .ci/run runs both.
CHAOS_OUT := .pytest-chaos-output.txt
chaos: setup temporal-server
	@set -o pipefail; FERRY_CHAOS=1 $(BIN)/python -m pytest -q -s -rfE tests/chaos $(PYTEST_ARGS) 2>&1 | tee $(CHAOS_OUT); \
	rc=$$?; if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	FERRY_TEST_TEMPORAL=cluster $(BIN)/python -m pytest -q -rfE tests/e2e/test_promotion.py \
	2>&1 | tee -a $(CHAOS_OUT); \
	rc=$$?; if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	[ "$$(grep -Ec '^[0-9]+ passed' $(CHAOS_OUT))" = 2 ] || { echo "make chaos: a run passed nothing" >&2; exit 1; }

# The fast tier, for the development loop: pure rules, models, CLI parsing and the replay of every committed history.
# Only the venv (no Go build, no server, no registry): seconds on a fresh clone. `make test` runs it too.
test-unit: $(STAMP)
	@$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/replay $(PYTEST_ARGS)

# NB: pytest exits 5 when nothing was collected; that is a failure here, and so is a run that passed nothing.
test: setup
	@set -o pipefail; $(BIN)/python -m pytest -q -rfE $(PYTEST_ARGS) 2>&1 | tee .pytest-output.txt; rc=$$?; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	grep -Eq '[0-9]+ passed' .pytest-output.txt || { echo "make test: no test passed" >&2; exit 1; }

demo: setup
	$(BIN)/python -m cli.demo

# lint-imports checks the layer contracts in pyproject.toml ([tool.importlinter]).
lint: setup
	$(BIN)/ruff format --check $(PACKAGES) tests bench
	$(BIN)/ruff check $(PACKAGES) tests bench
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/lint-imports

bench: setup
	@mkdir -p bench/results
	$(BIN)/python bench/kube_api.py > bench/results/kube_api.json
	$(BIN)/python bench/reconcile.py > bench/results/reconcile.json
	$(BIN)/python bench/history.py > bench/results/history.json
	$(BIN)/python bench/cli.py --fleet 1000 > bench/results/cli.json
	$(BIN)/python bench/release.py > bench/results/release.json
	@echo "bench: results in bench/results/ (figures: bench/README.md)"

clean:
	-$(BIN)/ferry dev down 2>/dev/null
	rm -rf $(VENV) .ferry .pytest-output.txt .pytest-chaos-output.txt
