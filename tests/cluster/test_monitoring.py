"""Prometheus sees every target of the inventory, and an API container's outage reaches the
alert receiver, then its recovery does too."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import PROMETHEUS_URL, Lab

RECEIVER = Path(__file__).with_name("webhook_receiver.py")
ALERTS_FILE = "/tmp/apptive-test-alerts.jsonl"


def _wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")


def _docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True).stdout


def _targets() -> list[dict[str, Any]]:
    return requests.get(f"{PROMETHEUS_URL}/api/v1/targets", timeout=10).json()["data"][
        "activeTargets"
    ]


def test_every_inventory_target_is_up(lab: Lab) -> None:
    hostvars = lab.inventory["_meta"]["hostvars"]
    expected = {("node", host) for host in hostvars}
    expected |= {("haproxy", host) for host in lab.hosts("lb")}
    expected |= {("apptive_api", name) for name in lab.containers}

    def up() -> set[tuple[str, str]] | None:
        seen = set()
        for target in _targets():
            labels = target["labels"]
            if target["health"] != "up":
                continue
            if labels["job"] == "apptive_api":
                seen.add(("apptive_api", f"{labels['host']}/{labels['container']}"))
            else:
                seen.add((labels["job"], labels["instance"]))
        missing = expected - seen
        return None if missing else seen

    _wait_for("every target up", up, timeout=90)


@pytest.fixture
def alert_receiver(lab: Lab) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    mon = lab.container(lab.hosts("monitoring")[0])
    # Through stdin, not `docker cp`: cp cannot write into the host's tmpfs /tmp.
    subprocess.run(
        ["docker", "exec", "-i", mon, "sh", "-c", "cat > /tmp/webhook_receiver.py"],
        input=RECEIVER.read_bytes(),
        check=True,
    )
    _docker("exec", mon, "rm", "-f", ALERTS_FILE)
    _docker("exec", "-d", mon, "python3", "/tmp/webhook_receiver.py", "9095", ALERTS_FILE)

    def notifications() -> list[dict[str, Any]]:
        text = _docker("exec", mon, "cat", ALERTS_FILE, check=False)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    yield notifications
    _docker("exec", mon, "pkill", "-f", "webhook_receiver.py", check=False)


def test_a_stopped_container_fires_an_alert_that_resolves(
    lab: Lab, alert_receiver: Callable[[], list[dict[str, Any]]]
) -> None:
    host = lab.hosts("api")[0]
    container = "apptive-api-1"

    def notified(status: str) -> Callable[[], bool]:
        def seen() -> bool:
            return any(
                alert["labels"].get("alertname") == "ApiContainerDown"
                and alert["labels"].get("host") == host
                and alert["labels"].get("container") == container
                and alert["status"] == status
                for message in alert_receiver()
                for alert in message.get("alerts", [])
            )

        return seen

    _docker("exec", lab.container(host), "docker", "stop", container)
    try:
        # `for: 1m`, a 15 s scrape and evaluation, and the lab's 5 s group_wait.
        _wait_for("ApiContainerDown to fire", notified("firing"), timeout=180)
    finally:
        _docker("exec", lab.container(host), "docker", "start", container)
    _wait_for("ApiContainerDown to resolve", notified("resolved"), timeout=180)
