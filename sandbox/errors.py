"""OpenAI-shaped errors: every failure leaves the sandbox as `{"error": {message, type, param, code}}`.

The openai SDK builds its exceptions from `body["error"]`, so FastAPI's default `{"detail": …}`
bodies must never escape; the handlers below replace all of them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
JSON_PARSE_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
    "not valid JSON.)"
)


class ApiError(Exception):
    """Raised anywhere in the sandbox to answer with an OpenAI error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(404, message, param=param, code=code)


def conflict(message: str, param: str | None = None) -> ApiError:
    # 400 rather than 409: the SDK retries 409, and a finished job will not become cancellable.
    return ApiError(400, message, param=param, headers={"x-should-retry": "false"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _from_validation(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            # Unknown routes read like OpenAI's own answer to a wrong URL.
            message = f"Invalid URL ({request.method} {request.url.path})"
        else:
            message = str(exc.detail)
        err = ApiError(exc.status_code, message, headers=dict(exc.headers or {}))
        return err.response()


def _from_validation(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first: dict[str, Any] = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return bad_request(JSON_PARSE_MESSAGE)
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(loc) or None
    msg = first.get("msg", "Invalid request")
    if param:
        msg = f"Invalid value for '{param}': {msg}"
    return bad_request(msg, param=param)


def internal_error_response() -> JSONResponse:
    body = error_body("The server had an error while processing your request.", "server_error", None, None)
    return JSONResponse(body, status_code=500)
