"""The record API's happy paths and its 404/405 answers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from apptive_api.app import create_app
from apptive_api.config import Config

BASE = "/api/users/42/records"


def test_put_creates_then_replaces(client: TestClient) -> None:
    first = client.put(f"{BASE}/alpha", json={"n": 1})
    assert first.status_code == 201
    assert first.json() == {"user_id": "42", "key": "alpha", "created": True}

    second = client.put(f"{BASE}/alpha", json={"n": 2})
    assert second.status_code == 200
    assert second.json()["created"] is False

    got = client.get(f"{BASE}/alpha")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    assert got.json() == {"n": 2}


@pytest.mark.parametrize(
    "value",
    [
        {"nested": {"list": [1, 2.5, None, True, "x"]}},
        [1, 2, 3],
        "just a string",
        0,
        None,
        {"unicode": "h\u00e9llo \u2603", "lone_surrogate": "\ud800"},
    ],
)
def test_any_json_value_round_trips(client: TestClient, value: object) -> None:
    body = json.dumps(value)
    assert client.put(f"{BASE}/v", content=body).status_code == 201
    assert client.get(f"{BASE}/v").json() == value


def test_list_keys_sorted(client: TestClient) -> None:
    for key in ["b", "A", "a", "_z", "0", "-x", "B-2"]:
        assert client.put(f"{BASE}/{key}", json=key).status_code == 201
    response = client.get(BASE)
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys == sorted(keys)
    assert set(keys) == {"b", "A", "a", "_z", "0", "-x", "B-2"}
    assert response.json()["user_id"] == "42"


def test_list_keys_of_unknown_user_is_empty_and_creates_nothing(
    client: TestClient, data_dir: Path
) -> None:
    response = client.get("/api/users/999/records")
    assert response.status_code == 200
    assert response.json() == {"user_id": "999", "keys": []}
    assert not (data_dir / "users").exists()


def test_users_are_isolated(client: TestClient) -> None:
    client.put("/api/users/1/records/k", json="one")
    client.put("/api/users/2/records/k", json="two")
    assert client.get("/api/users/1/records/k").json() == "one"
    assert client.get("/api/users/2/records/k").json() == "two"
    # Leading zeros make a different id: ids are opaque digit strings, not numbers.
    assert client.get("/api/users/01/records/k").status_code == 404


def test_delete_then_get_is_404(client: TestClient) -> None:
    client.put(f"{BASE}/gone", json={"x": 1})
    deleted = client.delete(f"{BASE}/gone")
    assert deleted.status_code == 204
    assert deleted.content == b""

    missing = client.get(f"{BASE}/gone")
    assert missing.status_code == 404
    assert missing.json()["error"] == "record_not_found"
    assert client.delete(f"{BASE}/gone").status_code == 404
    assert client.get(BASE).json()["keys"] == []


def test_unknown_record_is_404_json(client: TestClient, data_dir: Path) -> None:
    response = client.get("/api/users/5/records/nothing")
    assert response.status_code == 404
    assert response.json() == {
        "error": "record_not_found",
        "detail": "no record 'nothing' for user 5",
    }
    assert client.delete("/api/users/5/records/nothing").status_code == 404
    # Reads and deletes of an unknown user never create its database.
    assert not (data_dir / "users").exists()


def test_unknown_path_is_404_json(client: TestClient) -> None:
    for path in ["/", "/api", "/api/users", "/api/users/1", "/nope", "/api/users/1/records/"]:
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", f"{BASE}/k", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PATCH", f"{BASE}/k", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PUT", BASE, {"GET", "HEAD"}),
        ("DELETE", BASE, {"GET", "HEAD"}),
        ("POST", "/health", {"GET", "HEAD"}),
        ("PUT", "/metrics", {"GET", "HEAD"}),
    ],
)
def test_wrong_method_is_405_json(
    client: TestClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.request(method, path, content=b"{}")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


def test_head_on_record(client: TestClient) -> None:
    client.put(f"{BASE}/h", json=[1])
    response = client.head(f"{BASE}/h")
    assert response.status_code == 200
    assert response.content == b""


def test_database_lands_in_shard_directory(config: Config, data_dir: Path) -> None:
    with TestClient(create_app(config)) as client:
        client.put("/api/users/123456/records/k", json=1)
        digest = hashlib.sha256(b"123456").hexdigest()
        expected = data_dir / "users" / digest[:2] / digest[2:4] / "123456.sqlite3"
        assert expected.is_file()
        assert sorted(p.name for p in data_dir.rglob("*.sqlite3")) == ["123456.sqlite3"]
        # There is never a WAL. The owner cache's open connection (EXCLUSIVE locking mode)
        # keeps its rollback journal between commits, with the header zeroed: not a hot journal.
        assert not list(data_dir.rglob("*-wal"))
        for journal in data_dir.rglob("*-journal"):
            assert journal.read_bytes()[:8].strip(b"\0") == b""
    # Shutdown closed the connection, which deletes the journal.
    assert not list(data_dir.rglob("*-journal"))
