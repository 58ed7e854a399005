"""activities.secrets.redacted: an error out of a reconcile that decrypted leaves with no plaintext value in its
message, its details or its cause, keeps its type and retryability, and a cancellation passes untouched."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError, CancelledError

from activities.secrets.redacted import redacted
from ferry.redact import Redactor

VALUE = "pa55-w0rd-of-the-db"


def test_an_application_error_is_raised_again_without_the_value_or_its_cause() -> None:
    with pytest.raises(ApplicationError) as raised, redacted(Redactor.of([VALUE])):
        try:
            raise ValueError(f"body: {VALUE}")
        except ValueError as err:
            raise ApplicationError(f"apply: {VALUE}", {"why": VALUE}, type="BadInput", non_retryable=True) from err
    err = raised.value
    assert VALUE not in err.message and err.type == "BadInput" and err.non_retryable
    assert VALUE not in repr(err.details) and err.__cause__ is None and err.__suppress_context__


def test_any_other_error_keeps_its_class_and_stays_retryable() -> None:
    with pytest.raises(ApplicationError) as raised, redacted(Redactor.of([VALUE])):
        raise KeyError(VALUE)
    assert raised.value.type == "KeyError" and not raised.value.non_retryable and VALUE not in raised.value.message


def test_a_cancellation_and_a_reconcile_that_decrypted_nothing_pass_untouched() -> None:
    with pytest.raises(CancelledError), redacted(Redactor.of([VALUE])):
        raise CancelledError("cancelled")
    with pytest.raises(KeyError), redacted(None):
        raise KeyError(VALUE)
