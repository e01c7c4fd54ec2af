"""The one place domain errors become HTTP responses, in OpenAI's error envelope so the
`openai` SDK and its users parse them as they parse OpenAI's own."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import errors

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_S = 2

STATUS: list[tuple[type[errors.DomainError], int, str]] = [
    (errors.NotFound, 404, "invalid_request_error"),
    (errors.RateLimited, 429, "rate_limit_error"),
    (errors.Unauthorized, 401, "authentication_error"),
    (errors.PayloadTooLarge, 413, "invalid_request_error"),
    (errors.InvalidState, 409, "invalid_request_error"),
    (errors.Unprocessable, 422, "invalid_request_error"),
    (errors.Conflict, 409, "invalid_request_error"),
    (errors.BudgetExceeded, 400, "invalid_request_error"),
    (errors.InvalidInput, 400, "invalid_request_error"),
]


def error_body(type_: str, code: str, message: str, param: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "code": code, "message": message, "param": param, **extra}}


def status_and_body(exc: errors.DomainError) -> tuple[int, dict[str, Any]]:
    status, type_ = 500, "server_error"
    if isinstance(exc, errors.UpstreamError):
        status, type_ = exc.status, "upstream_error"
    for cls, code, kind in STATUS:
        if isinstance(exc, cls):
            status, type_ = code, kind
            break
    return status, error_body(type_, exc.code, exc.message, exc.param, **exc.details)


def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    status, body = status_and_body(exc)
    return JSONResponse(body, status_code=status, headers=error_headers(exc, status))


def error_headers(exc: errors.DomainError, status: int) -> dict[str, str] | None:
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, errors.RateLimited):
        return {**exc.headers, "Retry-After": str(int(exc.retry_after))}
    if isinstance(exc, errors.UpstreamError) and exc.retry_after:
        return {"Retry-After": exc.retry_after}
    return None


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg", "Invalid request."))
    return JSONResponse(
        error_body("invalid_request_error", "invalid_request", message, param), status_code=400
    )


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body("invalid_request_error", code, str(exc.detail)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(*database_unavailable())


def database_unavailable() -> tuple[dict[str, Any], int, dict[str, str]]:
    # Postgres restarting or unreachable: a retry in a moment works, where a 500 would say "bug".
    body = error_body(
        "server_error",
        "database_unavailable",
        "The database is unavailable for a moment. Retry shortly; repeat a create with the "
        "same Idempotency-Key so it cannot happen twice.",
    )
    return body, 503, {"Retry-After": str(DATABASE_RETRY_AFTER_S)}


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        error_body("server_error", "internal_error", "Internal error; it has been logged. Retry later."),
        status_code=500,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
