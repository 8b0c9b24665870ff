"""HTTP endpoints. Blocking SQLite and file system work always runs in the thread pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apptive_api.body import dump_json, parse_json, read_limited
from apptive_api.errors import ApiError, unavailable
from apptive_api.health import HealthProbe
from apptive_api.metrics import Metrics
from apptive_api.store import Store, StoreBusy, StoreError, StoreUnavailable
from apptive_api.validation import is_valid_key, is_valid_user_id

T = TypeVar("T")

RECORD_PATH = "/api/users/{user_id}/records/{key}"
RECORDS_PATH = "/api/users/{user_id}/records"


def _user_id(request: Request) -> str:
    user_id = str(request.path_params["user_id"])
    if not is_valid_user_id(user_id):
        raise ApiError(400, "invalid_user_id", "user_id must be 1-20 ASCII digits")
    return user_id


def _key(request: Request) -> str:
    key = str(request.path_params["key"])
    if not is_valid_key(key):
        raise ApiError(400, "invalid_key", "key must be 1-128 characters of [A-Za-z0-9_-]")
    return key


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _call_store(func: Callable[..., T], *args: str) -> T:
    try:
        return await run_in_threadpool(func, *args)
    except StoreUnavailable as exc:
        raise unavailable("store_unavailable", str(exc)) from None
    except StoreBusy as exc:
        raise unavailable("store_busy", str(exc)) from None
    except StoreError as exc:
        raise unavailable("store_error", str(exc)) from None


class Record(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        user_id, key = _user_id(request), _key(request)
        value = await _call_store(_store(request).get, user_id, key)
        if value is None:
            raise ApiError(404, "record_not_found", f"no record {key!r} for user {user_id}")
        # Stored as canonical JSON text already: send it as is, no decode/encode round trip.
        return Response(value, media_type="application/json")

    async def put(self, request: Request) -> Response:
        user_id, key = _user_id(request), _key(request)
        raw = await read_limited(request, request.app.state.config.max_body_bytes)
        value = dump_json(parse_json(raw))
        created = await _call_store(_store(request).put, user_id, key, value)
        return JSONResponse(
            {"user_id": user_id, "key": key, "created": created},
            status_code=201 if created else 200,
        )

    async def delete(self, request: Request) -> Response:
        user_id, key = _user_id(request), _key(request)
        if not await _call_store(_store(request).delete, user_id, key):
            raise ApiError(404, "record_not_found", f"no record {key!r} for user {user_id}")
        return Response(status_code=204)


class RecordList(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        user_id = _user_id(request)
        keys = await _call_store(_store(request).list_keys, user_id)
        return JSONResponse({"user_id": user_id, "keys": keys})


async def health(request: Request) -> Response:
    probe: HealthProbe = request.app.state.health
    state = await probe.check()
    if not state.ready:
        return JSONResponse({"status": "unavailable", "reason": state.reason}, status_code=503)
    config = request.app.state.config
    return JSONResponse({"status": "ok", "version": config.version, "instance": config.instance})


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return registry.render()
