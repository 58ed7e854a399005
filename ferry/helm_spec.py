"""An environment that delivers a Helm chart: the `helm:` part of its spec, and what a reconcile is told of it.

Two sources, everything else unchanged (semver or pin, signatures, approvals, holds, inventory, drift, health):
- a chart inside a Ferry release: ``chart: charts/shop`` (a path inside the release; without ``chart`` the
  environment's ``path`` is the chart). With both ``chart`` and a ``path`` other than ``.``, the plain manifests at
  ``path`` are applied beside the chart;
- a chart in an OCI Helm repository: ``chart: oci://HOST/PATH/NAME`` with ``version`` (a pin) or ``semver`` (a range).
  The environment then tracks that repository's chart versions exactly as it tracks a Ferry artifact: its
  ``repository``, ``version`` and ``semver`` are the chart's (derived when omitted, refused when they disagree).

``values`` (inline, merged last) and ``values-files`` (merged in order; inside the release, or inside the chart for an
OCI chart) are protected like the chart reference: in an approval-required environment a change waits for a signed
approval (ferry.spec.PROTECTED_FIELDS has ``helm``).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from ferry.model import Message, Model
from ferry.oci import split_repository
from ferry.versions import SemverRange, parse_release_version

OCI_SCHEME = "oci://"
MAX_INLINE_VALUES = 256 * 1024  # bytes of the spec's inline values as JSON (they live in the environment's spec)
MAX_VALUES_FILES = 16
MAX_CHART_REF = 255
_RELEASE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_inline_values(value: dict[str, Any]) -> dict[str, Any]:
    """Inline values within MAX_INLINE_VALUES bytes as JSON (they live in the spec and the workflow's state)."""
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_INLINE_VALUES:
        raise ValueError(
            f"inline values are {size} bytes as JSON, more than {MAX_INLINE_VALUES}: use a values file in the release"
        )
    return value


def _relative(value: str, what: str) -> str:
    parts = value.split("/")
    if not value or value.startswith("/") or ".." in parts or "\\" in value or "\x00" in value:
        raise ValueError(f"{what} {value[:80]!r} must be a relative path inside the release, with no '..'")
    return value.strip("/")


class HelmSpec(Model):
    """The `helm:` part of an environment's spec (kebab-case, like the rest)."""

    chart: str | None = Field(
        None,
        max_length=MAX_CHART_REF,
        description="a path inside the release, or oci://HOST/PATH/NAME (default: the environment's path)",
    )
    version: str | None = Field(None, max_length=128, description="an OCI chart's pinned version")
    semver: str | None = Field(None, max_length=256, description="an OCI chart's range to track")
    release_name: str | None = Field(
        None, alias="release-name", max_length=53, description="`.Release.Name` (default: the environment's name)"
    )
    values: dict[str, Any] = Field(default_factory=dict, description="inline values, merged last")
    values_files: list[Annotated[str, Field(max_length=255)]] = Field(
        default_factory=list, alias="values-files", max_length=MAX_VALUES_FILES
    )
    prune_crds: bool = Field(
        False, alias="prune-crds", description="prune the chart's crds/ CRDs when they leave it (default: never)"
    )
    lookup: bool = Field(
        False,
        description="let templates' `lookup` read the cluster (read-only, as the environment's service-account; "
        "the render is then not cached)",
    )

    @field_validator("chart")
    @classmethod
    def _chart(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(OCI_SCHEME):
            split_repository(value[len(OCI_SCHEME) :])  # ValueError naming what is wrong
            return value
        if "://" in value:
            raise ValueError(f"chart {value[:80]!r}: only oci:// charts or paths inside the release are delivered")
        return _relative(value, "chart")

    @field_validator("values")
    @classmethod
    def _values(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_inline_values(value)

    @field_validator("values_files")
    @classmethod
    def _values_files(cls, value: list[str]) -> list[str]:
        return [_relative(v, "values file") for v in value]

    @field_validator("release_name")
    @classmethod
    def _release_name(cls, value: str | None) -> str | None:
        if value is not None and not _RELEASE_NAME.match(value):
            raise ValueError(f"release-name {value[:80]!r} must be a lowercase DNS name of at most 53 characters")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None:
            parse_release_version(value)
        return value

    @field_validator("semver")
    @classmethod
    def _semver(cls, value: str | None) -> str | None:
        if value is not None:
            SemverRange(value)
        return value

    @model_validator(mode="after")
    def _tracking(self) -> HelmSpec:
        if self.is_oci and (self.version is None) == (self.semver is None):
            raise ValueError("helm: an oci:// chart needs exactly one of `version` (pinned) or `semver` (a range)")
        if not self.is_oci and (self.version is not None or self.semver is not None):
            raise ValueError(
                "helm.version/helm.semver are for oci:// charts; a chart inside a release follows the "
                "environment's version or semver"
            )
        return self

    @property
    def is_oci(self) -> bool:
        return bool(self.chart and self.chart.startswith(OCI_SCHEME))

    @property
    def oci_repository(self) -> str:
        """``oci://HOST/PATH`` -> ``HOST/PATH`` (the environment's repository)."""
        return (self.chart or "")[len(OCI_SCHEME) :]


def derive_oci_source(data: Any) -> Any:
    """An environment whose chart is oci:// tracks that repository's chart versions: fill ``repository``,
    ``version`` and ``semver`` from ``helm`` when omitted; when given, they must say the same (ValueError)."""
    if not isinstance(data, dict) or not isinstance(data.get("helm"), dict):
        return data
    helm = data["helm"]
    chart = helm.get("chart")
    if not isinstance(chart, str) or not chart.startswith(OCI_SCHEME):
        return data
    derived = {"repository": chart[len(OCI_SCHEME) :], "version": helm.get("version"), "semver": helm.get("semver")}
    out = dict(data)
    for key, value in derived.items():
        given = data.get(key)
        if given is not None and given != value:
            raise ValueError(
                f"{key} {str(given)[:80]!r} differs from the oci:// chart's ({value!r}): an environment "
                f"delivering {chart[:120]} tracks that chart; leave {key} out"
            )
        out[key] = value
    if data.get("path", ".") not in (".", "", None):
        raise ValueError("path: an environment delivering an oci:// chart has no release path; leave path out")
    return out


class HelmSource(Message):
    """What a reconcile renders: ``chart`` a directory inside the release, or ``""`` when the artifact is itself
    an OCI chart (its one top directory); ``manifests`` a path of plain manifests applied beside it (``""``: none)."""

    chart: str = ""
    manifests: str = ""
    release_name: str
    values: dict[str, Any] = Field(default_factory=dict)
    values_files: list[str] = Field(default_factory=list)
    prune_crds: bool = False
    lookup_as: str = Field("", description="lookup opted in: read as this identity (system:serviceaccount:NS:SA)")

    @classmethod
    def of(
        cls, helm: HelmSpec, environment: str, path: str, namespace: str = "", service_account: str | None = None
    ) -> HelmSource:
        if helm.is_oci:
            chart, manifests = "", ""
        elif helm.chart is None:
            chart, manifests = path, ""
        else:
            chart, manifests = helm.chart, "" if path in (".", "") else path
        return cls(
            chart=chart,
            manifests=manifests,
            release_name=helm.release_name or environment,
            values=helm.values,
            values_files=helm.values_files,
            prune_crds=helm.prune_crds,
            lookup_as=f"system:serviceaccount:{namespace}:{service_account}" if helm.lookup and service_account else "",
        )
