"""Prometheus exposition and the X-Served-By header on every kind of response."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from apptive_api.config import MAX_BODY_BYTES, Config


class ExplodingStore:
    """A store whose every call fails in a way the app does not expect."""

    def put(self, user_id: str, key: str, value: str) -> bool:
        raise RuntimeError("boom")

    def get(self, user_id: str, key: str) -> str | None:
        raise RuntimeError("boom")

    def delete(self, user_id: str, key: str) -> bool:
        raise RuntimeError("boom")

    def list_keys(self, user_id: str) -> list[str]:
        raise RuntimeError("boom")

    def close(self) -> None:
        pass


def _samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of one series, keyed by their label set, parsed as Prometheus would."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def _labels(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def test_metrics_exposition(client: TestClient, config: Config) -> None:
    client.put("/api/users/11/records/a", json=1)
    client.get("/api/users/11/records/a")
    client.get("/api/users/22/records/missing")
    client.get("/api/users/33/records")
    client.get("/no/such/path/12345")
    client.get("/health")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text

    requests = _samples(text, "apptive_http_requests_total")
    record = "/api/users/{user_id}/records/{key}"
    assert requests[_labels(method="PUT", route=record, status="201")] == 1
    assert requests[_labels(method="GET", route=record, status="200")] == 1
    assert requests[_labels(method="GET", route=record, status="404")] == 1
    lst = "/api/users/{user_id}/records"
    assert requests[_labels(method="GET", route=lst, status="200")] == 1
    assert requests[_labels(method="GET", route="<unmatched>", status="404")] == 1
    assert requests[_labels(method="GET", route="/health", status="200")] >= 1
    assert {route for labels in requests for name, route in labels if name == "route"} <= {
        record,
        lst,
        "/health",
        "/metrics",
        "<unmatched>",
    }

    # Bounded cardinality: raw paths, user ids and keys never become label values.
    for raw in ["12345", "/no/such", "missing", 'user_id="11"', "/api/users/11"]:
        assert raw not in text

    latency = _samples(text, "apptive_http_request_duration_seconds_count")
    assert latency[_labels(method="GET", route=record)] == 2

    info = _samples(text, "apptive_build_info")
    assert len(info) == 1
    (labels,) = info
    assert dict(labels)["version"] == config.version
    assert dict(labels)["instance"] == config.instance
    assert info[labels] == 1
    assert "apptive_http_requests_in_flight" in text
    assert "process_cpu_seconds_total" in text


def test_unknown_methods_share_one_label(client: TestClient) -> None:
    for method in ["FOO", "BAR", "BAZ"]:
        client.request(method, "/health")
    text = client.get("/metrics").text
    assert 'method="OTHER",route="/health",status="405"} 3.0' in text
    assert "FOO" not in text


def test_unexpected_error_is_json_500_and_counted(
    make_client: Callable[..., TestClient], config: Config
) -> None:
    client = make_client(config, ExplodingStore(), raise_server_exceptions=False)
    response = client.get("/api/users/1/records/k")
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": "internal server error"}
    assert response.headers["x-served-by"] == config.instance
    text = client.get("/metrics").text
    assert 'route="/api/users/{user_id}/records/{key}",status="500"} 1.0' in text


def _every_kind_of_response(client: TestClient) -> Iterator[tuple[str, int]]:
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/health", {}),
        ("GET", "/metrics", {}),
        ("PUT", "/api/users/1/records/k", {"json": 1}),
        ("PUT", "/api/users/1/records/k", {"json": 2}),
        ("GET", "/api/users/1/records/k", {}),
        ("GET", "/api/users/1/records", {}),
        ("HEAD", "/api/users/1/records/k", {}),
        ("DELETE", "/api/users/1/records/k", {}),
        ("GET", "/api/users/1/records/k", {}),
        ("GET", "/api/users/x/records/k", {}),
        ("GET", "/api/users/1/records/a.b", {}),
        ("PUT", "/api/users/1/records/k", {"content": b"{"}),
        ("PUT", "/api/users/1/records/k", {"content": b"1" * (MAX_BODY_BYTES + 1)}),
        ("POST", "/api/users/1/records/k", {}),
        ("GET", "/nowhere", {}),
    ]
    for method, path, kwargs in calls:
        response = client.request(method, path, **kwargs)
        assert response.headers.get("x-served-by") == "test-host/apptive-api-1", (method, path)
        yield method, response.status_code


def test_served_by_on_every_response(client: TestClient) -> None:
    statuses = {status for _, status in _every_kind_of_response(client)}
    assert statuses == {200, 201, 204, 400, 404, 405, 413}


@pytest.mark.parametrize("ready", [True, False])
def test_served_by_on_503(
    make_client: Callable[..., TestClient], config: Config, ready: bool
) -> None:
    if not ready:
        (config.data_dir / ".apptive-store").unlink()
    client = make_client(config)
    for path in ["/health", "/api/users/1/records"]:
        response = client.get(path)
        assert response.headers["x-served-by"] == config.instance
        assert response.status_code == (200 if ready else 503)
