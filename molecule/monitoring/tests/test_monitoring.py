"""Prometheus, Alertmanager, the Gluster collector and the dashboards on the scenario's host.

HTTP checks go to the ports the scenario publishes on 127.0.0.1 (molecule.yml).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ALERTMANAGER, PROMETHEUS, get_json, query, wait_for

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "monitoring" / "rules" / "apptive.yml"
DASHBOARD = REPO / "monitoring" / "dashboards" / "apptive.json"
TEXTFILE = "/var/lib/prometheus/node-exporter/gluster.prom"
SINK = "/var/lib/webhook-sink/alerts.jsonl"


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def alerts() -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for alert in get_json(f"{PROMETHEUS}/api/v1/alerts")["data"]["alerts"]:
        found.setdefault(alert["labels"]["alertname"], []).append(alert)
    return found


# --- the services -------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["prometheus", "prometheus-alertmanager"])
def test_service_running_and_enabled(host, service: str) -> None:
    unit = host.service(service)
    assert unit.is_running
    assert unit.is_enabled


def test_prometheus_config_is_valid(host) -> None:
    result = host.run("promtool check config /etc/prometheus/prometheus.yml")
    assert result.rc == 0, result.stdout + result.stderr
    assert host.file("/etc/prometheus/prometheus.yml").contains("Ansible managed")


def test_alertmanager_config_is_valid(host) -> None:
    result = host.run("amtool check-config /etc/prometheus/alertmanager.yml")
    assert result.rc == 0, result.stdout + result.stderr
    config = host.file("/etc/prometheus/alertmanager.yml")
    assert config.mode == 0o640
    assert config.group == "prometheus"


def test_flags_come_from_the_defaults_files(host) -> None:
    prometheus = host.file("/etc/default/prometheus").content_string
    assert "--web.listen-address=0.0.0.0:9090" in prometheus
    assert "--storage.tsdb.retention.time=15d" in prometheus
    alertmanager = host.file("/etc/default/prometheus-alertmanager").content_string
    assert "--web.listen-address=0.0.0.0:9093" in alertmanager
    # A single Alertmanager opens no gossip port.
    assert "--cluster.listen-address=" in alertmanager.split('"')[1].split()
    assert not host.socket("tcp://0.0.0.0:9094").is_listening


def test_only_the_listed_rule_files_are_deployed(host) -> None:
    assert sorted(host.file("/etc/prometheus/rules.d").listdir()) == [
        "apptive.yml",
        "molecule-rules.yml",
    ]


def test_recommended_packages_were_not_pulled_in(host) -> None:
    # node exporter is here because prepare.yml installed it, not as prometheus's Recommends.
    assert host.package("prometheus").is_installed
    assert not host.package("prometheus-pushgateway").is_installed


# --- Prometheus over HTTP -----------------------------------------------------------------


def test_prometheus_is_ready() -> None:
    wait_for(lambda: requests.get(f"{PROMETHEUS}/-/ready", timeout=5).ok, what="ready")


def test_every_alert_of_the_repo_is_loaded() -> None:
    groups = get_json(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert alert_names() <= loaded
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])


def test_targets_and_their_health() -> None:
    def health() -> dict[str, str] | None:
        targets = get_json(f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        states = {target["labels"]["job"]: target["health"] for target in targets}
        return states if "unknown" not in states.values() and len(states) == 4 else None

    assert wait_for(health, what="every target scraped") == {
        "prometheus": "up",
        "node": "up",
        "haproxy": "up",
        "apptive_api": "down",
    }


def test_node_target_carries_instance_and_groups(host) -> None:
    # Only our target: series of the package's default job may linger from before the restart.
    expr = f'up{{job="node", instance="{host.backend.get_hostname()}"}}'
    (series,) = wait_for(lambda: query(expr), what="node scraped")
    assert series["metric"]["groups"] == ",api,monitoring,storage,"


def test_api_target_carries_host_and_container(host) -> None:
    (series,) = wait_for(lambda: query('up{job="apptive_api"}'), what="api scraped")
    assert series["metric"]["host"] == host.backend.get_hostname()
    assert series["metric"]["container"] == "apptive-api-1"


def test_real_series_drive_the_alerts() -> None:
    """The down API target and HAProxy's backend without a live server raise their alerts."""

    def active() -> dict[str, list[dict]] | None:
        found = alerts()
        wanted = {
            "ApiContainerDown",
            "HaproxyBackendNoServerUp",
            "HaproxyServerDown",
            "MoleculeAlwaysFiring",
        }
        return found if wanted <= set(found) else None

    found = wait_for(active, what="alerts pending or firing")
    (api,) = found["ApiContainerDown"]
    assert api["labels"]["container"] == "apptive-api-1"
    (server,) = found["HaproxyServerDown"]
    # HAProxy 2.6 exports one series per state; the alert is on state="DOWN".
    assert server["labels"]["state"] == "DOWN"
    assert server["labels"]["server"] == "mol-apptive-api-1"
    assert found["MoleculeAlwaysFiring"][0]["state"] == "firing"


def test_store_mount_is_seen_so_its_alert_stays_quiet() -> None:
    wait_for(
        lambda: query('node_filesystem_size_bytes{mountpoint="/mnt/apptive_store"}'),
        what="the store's mount in node exporter",
    )
    expr = yaml.safe_load(RULES.read_text())["groups"]
    (rule,) = [r for g in expr for r in g["rules"] if r.get("alert") == "StoreMountMissing"]
    assert query(rule["expr"]) == []
    # The same expression finds the host when the mount point it looks for is not there.
    missing = rule["expr"].replace("/mnt/apptive_store", "/mnt/not-mounted")
    assert [s["metric"]["instance"] for s in query(missing)]


def test_gluster_series_reach_prometheus(host) -> None:
    # Through our node target only: before the role's restart, the package's default
    # configuration scraped the same node exporter as instance "localhost:9100".
    selector = f'volume="apptive", instance="{host.backend.get_hostname()}"'
    online = wait_for(
        lambda: query(f"gluster_brick_online{{{selector}}} == 1"), what="gluster series"
    )
    assert len(online) == 3
    assert query(f"gluster_volume_started{{{selector}}}")[0]["value"][1] == "1"


# --- Alertmanager -------------------------------------------------------------------------


def test_alertmanager_receives_alerts() -> None:
    def received() -> bool:
        alerts = get_json(f"{ALERTMANAGER}/api/v2/alerts")
        return any(a["labels"]["alertname"] == "MoleculeAlwaysFiring" for a in alerts)

    wait_for(received, what="MoleculeAlwaysFiring in Alertmanager")


def test_alertmanager_posts_to_the_webhook(host) -> None:
    def posted() -> set[str]:
        text = host.file(SINK).content_string if host.file(SINK).exists else ""
        notifications = [json.loads(line) for line in text.splitlines() if line.strip()]
        return {a["labels"]["alertname"] for n in notifications for a in n["alerts"]}

    wait_for(lambda: "MoleculeAlwaysFiring" in posted(), what="the webhook notification")


# --- reloads keep the process -------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "url", "metric"),
    [
        ("prometheus", PROMETHEUS, "prometheus_config_last_reload_success_timestamp_seconds"),
        (
            "prometheus-alertmanager",
            ALERTMANAGER,
            "alertmanager_config_last_reload_success_timestamp_seconds",
        ),
    ],
)
def test_reload_keeps_the_process(host, service: str, url: str, metric: str) -> None:
    def last_reload() -> float:
        text = requests.get(f"{url}/metrics", timeout=10).text
        (line,) = [line for line in text.splitlines() if line.startswith(metric + " ")]
        return float(line.split()[1])

    wait_for(lambda: requests.get(f"{url}/-/ready", timeout=5).ok, what=f"{service} ready")
    pid = host.run("systemctl show -p MainPID --value %s", service).stdout.strip()
    before = wait_for(last_reload, what=metric)
    time.sleep(1.1)  # the timestamp counts whole seconds
    assert host.run("systemctl reload %s", service).rc == 0
    wait_for(lambda: last_reload() > before, timeout=30, what=f"{service} reloaded")
    assert host.run("systemctl show -p MainPID --value %s", service).stdout.strip() == pid
    successful = metric.replace("_success_timestamp_seconds", "_successful")
    assert f"{successful} 1" in requests.get(f"{url}/metrics", timeout=10).text


# --- the Gluster collector ----------------------------------------------------------------


def test_gluster_metrics_timer(host) -> None:
    timer = host.service("gluster-metrics.timer")
    assert timer.is_enabled
    assert timer.is_running
    unit = host.file("/etc/systemd/system/gluster-metrics.service").content_string
    assert "--volume apptive" in unit
    assert "--no-heal" not in unit


def test_gluster_metrics_unit_is_sandboxed(host) -> None:
    shown = host.run(
        "systemctl show -p ProtectSystem -p ProtectHome -p NoNewPrivileges -p PrivateTmp"
        " gluster-metrics.service"
    ).stdout.split()
    assert sorted(shown) == [
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "ProtectSystem=strict",
    ]


@pytest.mark.parametrize("path", ["/etc", "/usr", "/usr/local/lib", "/var", "/var/lib"])
def test_system_directories_keep_their_permissions(host, path: str) -> None:
    directory = host.file(path)
    assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o755)


def test_gluster_metrics_file(host) -> None:
    def written() -> str:
        return host.file(TEXTFILE).content_string if host.file(TEXTFILE).exists else ""

    text = wait_for(written, what=TEXTFILE)
    assert "gluster_up 1" in text
    assert 'gluster_volume_bricks_online{volume="apptive"} 3' in text
    assert 'gluster_volume_heal_entries{volume="apptive"} 0' in text
    assert host.file(TEXTFILE).mode == 0o644
    # The hardened unit could run the gluster CLI and write its file.
    result = host.run("systemctl show -p Result --value gluster-metrics.service")
    assert result.stdout.strip() == "success"
    leftovers = host.run("find /var/lib/prometheus/node-exporter -name '.gluster.prom.*'")
    assert leftovers.stdout.strip() == ""


# --- dashboards ---------------------------------------------------------------------------


def test_dashboard_is_provisioned(host) -> None:
    copied = host.file("/var/lib/grafana/dashboards/apptive/apptive.json")
    assert copied.content_string == DASHBOARD.read_text()
    assert copied.group == "grafana"
    provisioning = host.file("/etc/grafana/provisioning/dashboards/apptive.yml")
    assert 'path: "/var/lib/grafana/dashboards/apptive"' in provisioning.content_string
    assert host.service("grafana-server").is_running
