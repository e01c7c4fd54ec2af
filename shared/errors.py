"""Domain errors. They carry a machine-readable code and a message that tells the user what to do,
and nothing about HTTP: `api/errors.py` is the one place that maps them to responses."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.details = details or {}


class NotFound(DomainError):
    code = "not_found"


class InvalidInput(DomainError):
    code = "invalid_input"


class Conflict(DomainError):
    code = "conflict"


class InvalidState(DomainError):
    code = "invalid_state"


class Unprocessable(DomainError):
    """Well-formed, but contradicts what the service already holds (e.g. a reused idempotency key)."""

    code = "unprocessable"


class Unauthorized(DomainError):
    code = "invalid_api_key"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class BudgetExceeded(DomainError):
    code = "budget_exceeded"


class RateLimited(DomainError):
    """Too many requests or tokens for a key this minute; `headers` are the limits' state
    (x-ratelimit-*), which clients read to pace themselves."""

    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after: float, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.headers = headers or {}


class UpstreamError(DomainError):
    """The provider answered with an error we pass on (status kept for the chat proxy)."""

    code = "upstream_error"

    def __init__(
        self, message: str, *, status: int = 502, retry_after: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.status = status
        self.retry_after = retry_after
