# The ferry worker image used by docker-compose.yml.

# helm v4.3.2, which the worker runs to render Helm charts (activities/helm), built from its Go module exactly as
# `make helm` does (same version, flags and version ldflag; keep the two in step). cosign is not built here: only the
# tests run it, the worker verifies signatures in Python (ferry/cosign.py).
# NB: not built on the development machines (no Docker daemon there); `make helm` is what the tests exercise.
FROM golang:1.26-bookworm AS helm
ARG HELM_VERSION=v4.3.2
RUN CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN=/out go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}" "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"

# sops v3.13.3 and age-keygen v1.3.2, which the worker runs to decrypt a release's SOPS files (activities/secrets), as
# `make sops` builds them (keep the versions in step).
FROM golang:1.26-bookworm AS sops
ARG SOPS_VERSION=v3.13.3
ARG AGE_VERSION=v1.3.2
RUN CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN=/out go install -trimpath -ldflags "-s -w" \
    "filippo.io/age/cmd/age-keygen@${AGE_VERSION}" "github.com/getsops/sops/v3/cmd/sops@${SOPS_VERSION}"

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY ferry ferry
COPY workflows workflows
COPY activities activities
COPY workers workers
COPY cli cli
COPY devstack devstack
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system ferry && mkdir -p /var/cache/ferry \
    && chown ferry /var/cache/ferry
COPY --from=helm /out/helm /usr/local/bin/helm
ENV FERRY_HELM=/usr/local/bin/helm
COPY --from=sops /out/sops /out/age-keygen /usr/local/bin/
ENV FERRY_SOPS=/usr/local/bin/sops FERRY_AGE_KEYGEN=/usr/local/bin/age-keygen
USER ferry
CMD ["ferry", "worker"]
