from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message

from apptive_api.app import create_app
from apptive_api.config import Config
from apptive_api.readiness import SENTINEL_NAME, Readiness, check_data_dir
from apptive_api.store import Store

INSTANCE = "test-host/apptive-api-1"
VERSION = "1.2.3-test"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory that looks like the mounted shared volume (sentinel present)."""
    path = tmp_path / "data"
    path.mkdir()
    (path / SENTINEL_NAME).touch()
    return path


@pytest.fixture
def config(data_dir: Path) -> Config:
    # The owner cache is on, as in production; a short idle timeout keeps the busy timeout short.
    return Config(
        data_dir=data_dir,
        instance=INSTANCE,
        version=VERSION,
        busy_timeout_ms=2000,
        store_idle_timeout_s=1.0,
    )


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Build clients on demand (other config, fake store); all are closed at teardown."""
    clients: list[TestClient] = []

    def _make(
        config: Config,
        store: Store | None = None,
        readiness: Callable[[Path], Readiness] = check_data_dir,
        **kwargs: Any,
    ) -> TestClient:
        client = TestClient(create_app(config, store, readiness), **kwargs)
        client.__enter__()  # runs the lifespan, as uvicorn would
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient], config: Config) -> TestClient:
    return make_client(config)


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def files_under() -> Callable[[Path], set[str]]:
    """Every file and directory below a root, as relative paths."""
    return _files_under


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks_read: int = 0


def _raw_request(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    chunks: Iterator[bytes] | None = None,
) -> RawResponse:
    """Drive the ASGI app with an exact path and body chunks, as a raw HTTP client could.

    HTTP client libraries normalise "/../" and set Content-Length themselves; this does not.
    """
    body_chunks = chunks if chunks is not None else iter([b""])
    sent: list[Message] = []
    read = 0

    async def receive() -> Message:
        nonlocal read
        chunk = next(body_chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in {"host": "testserver", **(headers or {})}.items()
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def run() -> None:
        await app(scope, receive, send)

    anyio.run(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers_out = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    return RawResponse(start["status"], headers_out, body, read)


@pytest.fixture
def raw_request() -> Callable[..., RawResponse]:
    return _raw_request


@pytest.fixture
def app(config: Config) -> ASGIApp:
    """An app for raw ASGI calls (no lifespan needed: nothing in it is required per request)."""
    return create_app(config)
