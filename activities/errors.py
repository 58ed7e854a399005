"""Raising classified errors from adapters."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from ferry.errors import ErrorType, is_retryable, truncate


def classified(error_type: ErrorType, message: str, *details: object) -> ApplicationError:
    """An ApplicationError whose retryability follows the taxonomy in ferry.errors."""
    return ApplicationError(
        truncate(message), *details, type=str(error_type), non_retryable=not is_retryable(error_type)
    )
