"""Docker Engine with the role's daemon.json, usable from the community.docker modules."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import testinfra

EXPECTED_DAEMON_JSON = {
    "live-restore": True,
    "log-driver": "json-file",
    "log-opts": {"max-file": "3", "max-size": "10m"},
}
PROBE_IMAGE = "apptive-molecule-probe:local"
PROBE_CONTAINER = "apptive-molecule-probe"


@pytest.mark.units("docker")
def test_docker_runs_and_starts_at_boot(host: testinfra.host.Host) -> None:
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_daemon_json_holds_the_options(host: testinfra.host.Host) -> None:
    daemon_json = host.file("/etc/docker/daemon.json")
    assert (daemon_json.user, daemon_json.group, daemon_json.mode) == ("root", "root", 0o644)
    assert json.loads(daemon_json.content_string) == EXPECTED_DAEMON_JSON


@pytest.mark.units("docker")
def test_daemon_runs_with_the_options(host: testinfra.host.Host) -> None:
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LoggingDriver"] == "json-file"
    assert info["LiveRestoreEnabled"] is True
    # A volume under /var/lib/docker, not the host container's overlay: overlay2 works.
    assert info["Driver"] == "overlay2"


@pytest.mark.units("docker")
def test_python_sdk_talks_to_the_daemon(host: testinfra.host.Host) -> None:
    version = host.check_output(
        "python3 -c 'import docker; print(docker.from_env().version()[\"ApiVersion\"])'"
    )
    assert version


@pytest.mark.units("docker")
def test_community_docker_modules_work_on_the_host(host: testinfra.host.Host) -> None:
    info = host.ansible(
        "community.docker.docker_container_info", f"name={PROBE_CONTAINER}-absent", check=False
    )
    assert not info.get("failed"), info
    assert info["exists"] is False
    host_info = host.ansible("community.docker.docker_host_info", "", check=False)
    assert not host_info.get("failed"), host_info
    assert host_info["host_info"]["LoggingDriver"] == "json-file"


@pytest.fixture
def probe_image(host: testinfra.host.Host) -> Iterator[str]:
    """A two-file image (sleep and its libraries) from the host: nothing can be pulled here."""
    host.check_output(
        "tar --create --dereference --directory / "
        "$(ldd /usr/bin/sleep | grep -o '/[^ ]*' | sed 's|^/||') usr/bin/sleep "
        "| docker import - %s",
        PROBE_IMAGE,
    )
    yield PROBE_IMAGE
    host.run("docker rm --force %s", PROBE_CONTAINER)
    host.run("docker image rm --force %s", PROBE_IMAGE)


@pytest.mark.units("docker")
def test_containers_survive_a_daemon_restart(host: testinfra.host.Host, probe_image: str) -> None:
    host.check_output(
        "docker run --detach --name %s %s /usr/bin/sleep 300", PROBE_CONTAINER, probe_image
    )
    started = host.check_output(
        "docker inspect --format '{{.State.StartedAt}}' %s", PROBE_CONTAINER
    )
    host.check_output("systemctl restart docker")
    state = host.check_output(
        "docker inspect --format '{{.State.Running}} {{.State.StartedAt}}' %s", PROBE_CONTAINER
    )
    # live-restore: the same process still runs, it was not restarted with the daemon.
    assert state == f"true {started}"
