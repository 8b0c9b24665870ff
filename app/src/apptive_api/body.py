"""Reading a JSON request body without ever holding more than the limit in memory."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from apptive_api.errors import ApiError


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdecimal()):
            raise ApiError(400, "invalid_content_length", "Content-Length is not a number")
        # Refuse before reading a byte: the client announced more than we will accept.
        if int(declared) > limit:
            raise _too_large(limit)
    # Chunked bodies have no Content-Length: count while streaming and stop at the limit.
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise _too_large(limit)
    return bytes(received)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    # 1e999 parses to inf, which could never be written back out as JSON.
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """Any content type is accepted; the body itself must be one valid JSON document."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "request body is empty; expected a JSON document")
    try:
        # parse_constant: Python's json accepts NaN/Infinity, which other JSON parsers reject.
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "JSON document is nested too deeply") from None


def dump_json(value: Any) -> str:
    # Compact, and ASCII-only so that a lone surrogate (legal in JSON text, not in UTF-8)
    # round-trips as an escape instead of failing inside SQLite's UTF-8 encoder.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
