"""The one JSON error shape every failure uses: {"error": "<code>", "detail": "..."}."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("apptive_api.errors")

# Clients of a store that is down should come back after about one health-check cycle.
RETRY_AFTER_SECONDS = "5"

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


class ApiError(Exception):
    """An expected failure that maps to one HTTP status and error code."""

    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})


def error_response(
    status_code: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code, headers=headers)


def unavailable(code: str, detail: str) -> ApiError:
    return ApiError(503, code, detail, {"Retry-After": RETRY_AFTER_SECONDS})


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.detail, exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    # Starlette's own 404 (no route) and 405 (wrong method) arrive here; keep their headers
    # (Allow on 405) but replace the plain-text body with the JSON shape.
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if exc.detail else code.replace("_", " ")
    if exc.status_code == 404:
        detail = "no such resource"
    return error_response(exc.status_code, code, detail, exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    # Never echo the exception text: it may carry file system paths or SQL.
    return error_response(500, "internal_error", "internal server error")
