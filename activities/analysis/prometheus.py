"""One instant query to Prometheus's HTTP API (POST /api/v1/query), read as one check's Result.

Prometheus answers `{"status": "success", "data": {"resultType": ..., "result": ...}}`, or `{"status": "error",
"errorType": ..., "error": ...}` with HTTP 400 (bad_data: the query does not parse), 422 (execution: it cannot be
evaluated), 503 (timeout, canceled, unavailable) or 500 (internal). A query that Prometheus refuses is BAD_QUERY
(the spec must change); Prometheus unreachable, slow, overloaded or failing is METRICS_UNAVAILABLE (retried,
bounded by the rollout). What a check cannot use (several series, a matrix, an answer over MAX_RESPONSE_BYTES) is a
Result of kind "error", which the verdict counts as a failed interval.

No redirect is followed, no credentials are sent (no netrc, no proxy from the environment): the URL is the
operator's, checked by ferry.settings.http_url.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import requests

from activities.errors import classified
from ferry.analysis import Result
from ferry.errors import ErrorType

QUERY_PATH = "/api/v1/query"
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_ERROR_TEXT = 500  # characters of Prometheus's error message kept
MAX_LABELS_SHOWN = 200
CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 5.0
READ_SLACK_S = 2.0  # beyond the query's own timeout: Prometheus answers `timeout` itself first
BAD_QUERY_STATUSES = (400, 422)
QUERY_REFUSED_TYPES = ("bad_data", "execution")


class _TooLarge(Exception):
    pass


def instant_query(url: str, promql: str, timeout_s: float, max_bytes: int = MAX_RESPONSE_BYTES) -> Result:
    """`promql` evaluated now at Prometheus `url` (its base URL): one sample or a scalar -> value, an empty vector or
    NaN -> no-data, anything else -> error. Raises BAD_QUERY (non-retryable) when Prometheus refuses the query and
    METRICS_UNAVAILABLE (retryable) when it cannot answer."""
    endpoint = url.rstrip("/") + QUERY_PATH
    deadline = time.monotonic() + timeout_s + READ_SLACK_S
    session = requests.Session()
    session.trust_env = False  # no ~/.netrc credentials, no proxy settings from the environment
    try:
        with session.post(
            endpoint,
            data={"query": promql, "timeout": f"{max(1, round(timeout_s * 1000))}ms"},
            timeout=(CONNECT_TIMEOUT_S, timeout_s + READ_SLACK_S),
            allow_redirects=False,
            stream=True,
            headers={"Accept": "application/json"},
        ) as response:
            status = response.status_code
            _refuse_redirect(response, url)
            try:
                body = _read_bounded(response, max_bytes, deadline)
            except _TooLarge:
                return Result(kind="error", error=f"Prometheus's answer is larger than {max_bytes} bytes: refused")
    except requests.Timeout:
        raise _unavailable(url, f"no answer within {timeout_s + READ_SLACK_S:g}s") from None
    except requests.RequestException as err:
        raise _unavailable(url, f"{type(err).__name__}: {str(err)[:200]}") from None
    finally:
        session.close()
    return _interpret(url, status, body)


def _refuse_redirect(response: requests.Response, url: str) -> None:
    if response.is_redirect or 300 <= response.status_code < 400:
        location = str(response.headers.get("Location", ""))[:200]
        raise classified(
            ErrorType.BAD_INPUT,
            f"Prometheus at {url} answered HTTP {response.status_code} redirecting to {location!r}: redirects are "
            "not followed; configure the URL it answers on",
        )


def _read_bounded(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _TooLarge
    chunks, size = list[bytes](), 0
    for chunk in response.iter_content(CHUNK):  # decoded (gzip) bytes: the bound is on what is parsed
        size += len(chunk)
        if size > max_bytes:
            raise _TooLarge
        if time.monotonic() > deadline:
            raise requests.Timeout
        chunks.append(chunk)
    return b"".join(chunks)


def _unavailable(url: str, why: str) -> Exception:
    return classified(ErrorType.METRICS_UNAVAILABLE, f"Prometheus at {url} is unavailable: {why}")


def _interpret(url: str, status: int, body: bytes) -> Result:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise _unavailable(url, f"HTTP {status} with an answer that is not Prometheus's JSON: {body[:120]!r}")
    if doc.get("status") != "success" or status != 200:
        raise _api_error(url, status, doc)
    data = doc.get("data")
    if not isinstance(data, dict):
        raise _unavailable(url, "a success without `data`")
    return _result(data.get("resultType"), data.get("result"))


def _api_error(url: str, status: int, doc: dict[str, Any]) -> Exception:
    kind = str(doc.get("errorType", ""))[:40]
    text = str(doc.get("error", ""))[:MAX_ERROR_TEXT]
    if status in BAD_QUERY_STATUSES and kind in QUERY_REFUSED_TYPES:
        return classified(ErrorType.BAD_QUERY, f"Prometheus refused the query ({kind}): {text}")
    return _unavailable(url, f"HTTP {status} {kind or 'error'}: {text}")


def _result(kind: object, result: object) -> Result:
    if kind == "scalar" and isinstance(result, list):
        return _sample(result)
    if kind != "vector":
        return Result(kind="error", error=f"the query returns a {str(kind)[:20]}; a check needs a vector or a scalar")
    if not isinstance(result, list):
        return Result(kind="error", error="Prometheus's vector is not a list")
    if not result:
        return Result(kind="no-data")
    if len(result) > 1:
        first = result[0].get("metric") if isinstance(result[0], dict) else None
        labels = json.dumps(first, sort_keys=True)[:MAX_LABELS_SHOWN]
        return Result(
            kind="error",
            error=f"the query returns {len(result)} series; a check needs exactly one (the first: {labels})",
        )
    sample = result[0].get("value") if isinstance(result[0], dict) else None
    return _sample(sample)


def _sample(sample: object) -> Result:
    """[timestamp, "value"]: Prometheus sends the value as a string ("NaN", "+Inf" included)."""
    if not isinstance(sample, list) or len(sample) != 2 or not isinstance(sample[1], str):
        return Result(kind="error", error=f"not a Prometheus sample: {str(sample)[:100]}")
    try:
        value = float(sample[1])
    except ValueError:
        return Result(kind="error", error=f"not a number: {sample[1][:40]!r}")
    if math.isnan(value):
        return Result(kind="no-data")
    if math.isinf(value):  # e.g. histogram_quantile beyond the last finite bucket: not a value to compare
        return Result(kind="error", error=f"the query returns {sample[1][:10]}")
    return Result(kind="value", value=value)
