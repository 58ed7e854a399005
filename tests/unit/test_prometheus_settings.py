"""Where the worker's Prometheus is configured: the clusters file's `prometheus` and FERRY_PROMETHEUS_URL, both
http(s) URLs without credentials (ferry.settings.http_url)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from ferry.clusters import ClustersFile
from ferry.settings import MAX_URL, http_url
from workers.settings import SettingsInvalid, load_settings


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
        ("https://prometheus.example/", "https://prometheus.example"),
        ("http://[::1]:9090/prom/", "http://[::1]:9090/prom"),
    ],
)
def test_http_urls_are_kept_without_their_trailing_slash(raw: str, kept: str) -> None:
    assert http_url(raw, "prometheus") == kept


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("ftp://prometheus:21", "must be an http:// or https:// URL with a host"),
        ("prometheus:9090", "must be an http:// or https:// URL with a host"),
        ("http://", "must be an http:// or https:// URL with a host"),
        ("http://admin:secret@prometheus:9090", "must not carry credentials"),
        ("http://token@prometheus:9090", "must not carry credentials"),
        ("http://prometheus:9090/?x=1", "must have no query or fragment"),
        ("http://prometheus:9090/#top", "must have no query or fragment"),
        ("http://prometheus:port", "is not a URL"),
        ("http://prometheus:99999", "is not a URL"),
        ("http://p/" + "a" * MAX_URL, f"longer than {MAX_URL}"),
    ],
)
def test_other_urls_are_refused_naming_why(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match="prometheus") as err:
        http_url(raw, "prometheus")
    assert why in str(err.value)
    assert "secret" not in str(err.value)


def test_the_clusters_file_entry_takes_prometheus() -> None:
    clusters = ClustersFile.model_validate({"clusters": {"eu": {"prometheus": "https://prom.eu:9090/"}, "us": {}}})
    assert clusters.clusters["eu"].prometheus == "https://prom.eu:9090"
    assert clusters.clusters["us"].prometheus is None
    with pytest.raises(pydantic.ValidationError, match="must be an http:// or https:// URL"):
        ClustersFile.model_validate({"clusters": {"eu": {"prometheus": "file:///etc/passwd"}}})


def test_the_worker_fallback_is_read_and_checked(tmp_path: Path) -> None:
    env = {"FERRY_PROMETHEUS_URL": "http://127.0.0.1:9090/"}
    assert load_settings(env=env, state_dir=tmp_path).worker.prometheus_url == "http://127.0.0.1:9090"
    assert load_settings(env={}, state_dir=tmp_path).worker.prometheus_url is None
    with pytest.raises(SettingsInvalid, match="FERRY_PROMETHEUS_URL") as err:
        load_settings(env={"FERRY_PROMETHEUS_URL": "gopher://x"}, state_dir=tmp_path)
    assert "worker.prometheus_url" in str(err.value) and "http:// or https://" in str(err.value)
