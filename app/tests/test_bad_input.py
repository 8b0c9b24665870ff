"""Every malformed identifier and body is a 4xx JSON error and never touches the disk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from apptive_api.config import MAX_BODY_BYTES
from apptive_api.readiness import SENTINEL_NAME

# As they appear in the URL; the server sees them percent-decoded.
BAD_USER_IDS = [
    "abc",
    "12a",
    "1" * 21,
    "-1",
    "+1",
    "1.0",
    "%201",  # leading space
    "1%0A",  # trailing newline: "$" in a regex would have let this through
    "%D9%A1%D9%A2",  # Arabic-Indic digits: \d would have let these through
    "%2E%2E",  # ..
    "..%2F..",  # ../..
    "1%2F2",  # 1/2
    "%2Fetc%2Fpasswd",
    "1%00",
    "%5C..%5C..",  # \..\..
]
BAD_KEYS = [
    "a.b",
    "..",
    "%2E%2E",
    "a%2Fb",
    "..%2F..%2Fdata",
    "k" * 129,
    "a%20b",
    "%C3%A9",
    "a%00b",
    "%2Fabs",
    "a%5Cb",
    "a:b",
    "*",
]


def _is_json_4xx(response_status: int, payload: dict[str, str]) -> bool:
    return 400 <= response_status < 500 and set(payload) == {"error", "detail"}


@pytest.mark.parametrize("user_id", BAD_USER_IDS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_bad_user_id_on_record(client: TestClient, method: str, user_id: str) -> None:
    response = client.request(method, f"/api/users/{user_id}/records/key", json={"a": 1})
    assert _is_json_4xx(response.status_code, response.json()), response.text
    # Either the path no longer matches a route (an encoded slash split it) or the id is bad.
    assert response.json()["error"] in {"invalid_user_id", "not_found"}


@pytest.mark.parametrize("user_id", BAD_USER_IDS)
def test_bad_user_id_on_list(client: TestClient, user_id: str) -> None:
    response = client.get(f"/api/users/{user_id}/records")
    assert _is_json_4xx(response.status_code, response.json()), response.text


@pytest.mark.parametrize(
    ("user_id", "code"),
    [("abc", "invalid_user_id"), ("1" * 21, "invalid_user_id"), ("%2E%2E", "invalid_user_id")],
)
def test_bad_user_id_is_400(client: TestClient, user_id: str, code: str) -> None:
    response = client.get(f"/api/users/{user_id}/records/k")
    assert response.status_code == 400
    assert response.json()["error"] == code


def test_longest_user_id_and_key_are_accepted(client: TestClient) -> None:
    user_id, key = "9" * 20, "K" * 128
    assert client.put(f"/api/users/{user_id}/records/{key}", json=1).status_code == 201
    assert client.get(f"/api/users/{user_id}/records").json()["keys"] == [key]


def test_empty_user_id_and_key_are_404(client: TestClient) -> None:
    for path in ["/api/users//records/k", "/api/users//records", "/api/users/1/records/"]:
        response = client.put(path, json=1)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_bad_key(client: TestClient, method: str, key: str) -> None:
    response = client.request(method, f"/api/users/1/records/{key}", json={"a": 1})
    assert _is_json_4xx(response.status_code, response.json()), response.text
    assert response.json()["error"] in {"invalid_key", "not_found"}


@pytest.mark.parametrize(
    "path",
    [
        # What a raw client can send and an HTTP library would have normalised away.
        "/api/users/../records/k",
        "/api/users/../../../../tmp/records/k",
        "/api/users/1/records/..",
        "/api/users/1/records/../../../../escaped",
        "/api/users/../records",
    ],
)
def test_literal_dot_segments(
    app: ASGIApp, raw_request: Callable[..., Any], path: str, data_dir: Path
) -> None:
    response = raw_request(app, "PUT", path, chunks=iter([b'{"a": 1}']))
    assert 400 <= response.status < 500


def test_traversal_attempts_never_create_files(
    client: TestClient,
    app: ASGIApp,
    raw_request: Callable[..., Any],
    tmp_path: Path,
    data_dir: Path,
    files_under: Callable[[Path], set[str]],
) -> None:
    before = files_under(tmp_path)
    for user_id in BAD_USER_IDS:
        for key in ["k", *BAD_KEYS]:
            client.put(f"/api/users/{user_id}/records/{key}", json={"x": 1})
    for key in BAD_KEYS:
        client.put(f"/api/users/1/records/{key}", json={"x": 1})
    for path in ["/api/users/../records/k", "/api/users/1/records/../../../x"]:
        raw_request(app, "PUT", path, chunks=iter([b"1"]))
    assert files_under(tmp_path) == before == {"data", f"data/{SENTINEL_NAME}"}


# Bodies.


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"{'single': 'quotes'}",
        b"",
        b"   ",
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b"1e999",
        b"9" * 5000,
        b"\xff\xfe\x00",
        b"{}x",
        b'{"a": 1,}',
    ],
)
def test_malformed_json_is_400(client: TestClient, body: bytes, data_dir: Path) -> None:
    response = client.put("/api/users/1/records/k", content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert not (data_dir / "users").exists()


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    response = client.put("/api/users/1/records/k", content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "text/plain", "application/octet-stream", "x/unknown; q=1"],
)
def test_any_content_type_with_valid_json_is_accepted(
    client: TestClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.put("/api/users/1/records/k", content=b'{"ok": true}', headers=headers)
    assert response.status_code in (200, 201)
    assert client.get("/api/users/1/records/k").json() == {"ok": True}


def test_form_content_type_still_requires_json(client: TestClient) -> None:
    response = client.put(
        "/api/users/1/records/k",
        content=b"a=1&b=2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


def _json_of_size(size: int) -> bytes:
    body = b'"' + b"x" * (size - 2) + b'"'
    assert len(body) == size
    return body


def test_body_at_the_limit_is_accepted(client: TestClient) -> None:
    response = client.put("/api/users/1/records/big", content=_json_of_size(MAX_BODY_BYTES))
    assert response.status_code == 201
    assert len(client.get("/api/users/1/records/big").content) == MAX_BODY_BYTES


def test_too_large_with_content_length_is_413(client: TestClient, data_dir: Path) -> None:
    response = client.put("/api/users/1/records/big", content=_json_of_size(MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert not (data_dir / "users").exists()


def test_too_large_without_content_length_is_413(client: TestClient, data_dir: Path) -> None:
    def chunked() -> Iterator[bytes]:
        yield b'"'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"'

    response = client.put("/api/users/1/records/big", content=chunked())
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert not (data_dir / "users").exists()


def test_declared_content_length_is_refused_before_reading(
    app: ASGIApp, raw_request: Callable[..., Any]
) -> None:
    endless = iter(lambda: b"x" * 65536, None)
    response = raw_request(
        app,
        "PUT",
        "/api/users/1/records/k",
        headers={"content-length": str(MAX_BODY_BYTES + 1)},
        chunks=endless,
    )
    assert response.status == 413
    assert response.chunks_read == 0


def test_unbounded_body_stops_at_the_limit(app: ASGIApp, raw_request: Callable[..., Any]) -> None:
    # No Content-Length and a body that never ends: reading must stop just past the limit.
    endless = iter(lambda: b"x" * 65536, None)
    response = raw_request(app, "PUT", "/api/users/1/records/k", chunks=endless)
    assert response.status == 413
    assert response.chunks_read == MAX_BODY_BYTES // 65536 + 1


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", " "])
def test_bad_content_length_is_400(
    app: ASGIApp, raw_request: Callable[..., Any], value: str
) -> None:
    response = raw_request(
        app, "PUT", "/api/users/1/records/k", headers={"content-length": value}, chunks=iter([b"1"])
    )
    assert response.status == 400
