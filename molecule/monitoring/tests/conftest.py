"""Shared helpers for the monitoring scenario's tests; prints the units' journals on failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import requests

PROMETHEUS = "http://127.0.0.1:19090"
ALERTMANAGER = "http://127.0.0.1:19093"
UNITS = (
    "prometheus",
    "prometheus-alertmanager",
    "gluster-metrics.service",
    "gluster-metrics.timer",
    "prometheus-node-exporter",
    "webhook-sink",
)
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float = 90, what: str = "") -> T:
    """check() until it returns something true; its last exception or a timeout fails."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            error: Exception | None = None
        except (AssertionError, requests.RequestException, KeyError, ValueError) as caught:
            error = caught
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from error
        time.sleep(2)


def get_json(url: str, **params: Any) -> Any:
    response = requests.get(url, params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def query(expr: str) -> list[dict[str, Any]]:
    body = get_json(f"{PROMETHEUS}/api/v1/query", query=expr)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    host = getattr(item, "funcargs", {}).get("host")
    if report.when == "call" and report.failed and host is not None:
        for unit in UNITS:
            journal = host.run("journalctl --no-pager -n 30 -u %s", unit)
            report.sections.append((f"journal of {unit}", journal.stdout or journal.stderr))
