"""The Gateway API's standard-channel CRDs (HTTPRoute v1 and its kin), pinned to one release: `make gateway-api`
copies them from the Go module into ``~/.cache/ferry/gateway-api/<version>/``; `ferry dev up` and the tests'
``gateway_api`` fixture install them into the control plane. Only the kinds are installed: no Gateway controller
runs here (the simulated traffic generator, devstack/simulated_traffic.py, plays the requests a route would carry).
The bundle's ValidatingAdmissionPolicy (safe-upgrades) is left out on purpose: see the Makefile's gateway-api."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from devstack.procs import StackError

VERSION = "v1.6.3"  # NB: keep in step with the Makefile's GATEWAY_API_VERSION
GROUP = "gateway.networking.k8s.io"
FILE_GLOB = f"{GROUP}_*.yaml"
MANAGER = "ferry-dev-gateway-api"
MAX_FILE_BYTES = 4 * 1024 * 1024  # the largest CRD (httproutes) is ~450 KB
ESTABLISH_TIMEOUT = 30.0  # the API server establishes a new CRD in well under a second here
REQUEST_TIMEOUT = 30.0
HINT = "run `make gateway-api` (or `make setup`)"


def crd_dir() -> Path:
    """The cache directory `make gateway-api` fills; StackError with the make hint when it is missing or empty."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = cache / "ferry" / "gateway-api" / VERSION
    if not path.is_dir() or not any(path.glob(FILE_GLOB)):
        raise StackError(f"gateway-api: the Gateway API {VERSION} CRDs are not in {path}: {HINT}")
    return path


def crd_documents(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition of the bundle, in file order; StackError naming a file that is too large,
    not YAML, or holds anything but a CRD of the Gateway API's group."""
    docs: list[dict[str, Any]] = []
    for path in sorted((directory or crd_dir()).glob(FILE_GLOB)):
        if path.stat().st_size > MAX_FILE_BYTES:
            raise StackError(f"gateway-api: {path} is larger than {MAX_FILE_BYTES} bytes; {HINT} again")
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as err:
            raise StackError(f"gateway-api: {path} is not YAML ({str(err)[:200]}); {HINT} again") from None
        for doc in loaded:
            if not _is_gateway_crd(doc):
                raise StackError(f"gateway-api: {path} holds something other than a {GROUP} CRD; {HINT} again")
            docs.append(doc)
    return docs


def _is_gateway_crd(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and doc.get("kind") == "CustomResourceDefinition"
        and doc.get("apiVersion") == "apiextensions.k8s.io/v1"
        and isinstance(doc.get("spec"), dict)
        and doc["spec"].get("group") == GROUP
        and isinstance((doc.get("metadata") or {}).get("name"), str)
    )


def install(kubeconfig: Path) -> list[str]:
    """Server-side apply of every CRD of the bundle (field manager ``ferry-dev-gateway-api``), then wait until
    each is Established; returns the CRD names. Idempotent: a second call changes nothing. StackError when the
    bundle is missing (the make hint) or a CRD is not Established within ESTABLISH_TIMEOUT."""
    import kubernetes

    docs = crd_documents()
    api = kubernetes.config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        crds = kubernetes.dynamic.DynamicClient(api).resources.get(  # type: ignore[no-untyped-call]
            api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
        )
        for doc in docs:
            crds.server_side_apply(
                body=doc, field_manager=MANAGER, force_conflicts=True, _request_timeout=REQUEST_TIMEOUT
            )
        names = [str(doc["metadata"]["name"]) for doc in docs]
        deadline = time.monotonic() + ESTABLISH_TIMEOUT
        for name in names:
            while not _established(crds.get(name=name, _request_timeout=REQUEST_TIMEOUT).to_dict()):
                if time.monotonic() > deadline:
                    raise StackError(f"gateway-api: CRD {name} is not Established after {ESTABLISH_TIMEOUT:.0f}s")
                time.sleep(0.1)
        return names
    finally:
        api.close()


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
