"""Errors out of a reconcile that decrypted: re-raised with every plaintext value taken out (ferry.redact), and
without their causes (an API server's body, a tool's output), which Temporal would otherwise record too."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from temporalio.exceptions import ApplicationError, CancelledError

from ferry.redact import Redactor


def _detail(value: object, redactor: Redactor) -> object:
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, list | tuple):
        return [_detail(v, redactor) for v in value]
    if isinstance(value, dict):
        return {redactor.text(str(k)): _detail(v, redactor) for k, v in value.items()}
    return value


@contextlib.contextmanager
def redacted(redactor: Redactor | None) -> Iterator[None]:
    """With a non-empty ``redactor``, every exception leaves as an ApplicationError whose message and details have
    no value of it (an unclassified one keeps its class name and stays retryable)."""
    if not redactor:
        yield
        return
    try:
        yield
    except CancelledError:
        raise  # NB: the activity's cancellation, which names no value
    except ApplicationError as err:
        raise ApplicationError(
            redactor.text(err.message),
            *(_detail(d, redactor) for d in err.details),
            type=err.type,
            non_retryable=err.non_retryable,
            next_retry_delay=err.next_retry_delay,
        ) from None
    except Exception as err:  # NB: whatever it is, its text may hold a value
        raise ApplicationError(redactor.text(f"{type(err).__name__}: {err}"), type=type(err).__name__) from None
