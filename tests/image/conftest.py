"""Fixtures for the image test: a Docker client, the built image, containers that clean up."""

from __future__ import annotations

import contextlib
import os
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
NAME_PREFIX = "apptive-imagetest-"
LABEL = "apptive-imagetest"
APP_UID = 10001
INSTANCE = "imagetest/apptive-api-1"
LOOPBACK = "127.0.0.1"

docker = pytest.importorskip("docker", reason="the docker SDK is not installed")


def image_version() -> str:
    override = os.environ.get("APPTIVE_IMAGE_VERSION", "").strip()
    if override:
        return override
    with open(REPO / "app" / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no docker here"
        pytest.skip(f"Docker Engine not available ({exc}); image tests need it")
    _remove_leftovers(client)
    yield client
    client.close()


def _remove_leftovers(client: Any) -> None:
    # Containers of an earlier run that died before its finalizers ran. Running ones may
    # belong to a concurrent run and are left alone.
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        if container.name.startswith(NAME_PREFIX) and container.status != "running":
            container.remove(force=True)


@pytest.fixture(scope="session")
def expected_version() -> str:
    return image_version()


@pytest.fixture(scope="session")
def instance() -> str:
    return INSTANCE


@pytest.fixture(scope="session")
def image_tag(expected_version: str) -> str:
    return f"apptive-api:{expected_version}"


@pytest.fixture(scope="session")
def image(docker_client: Any, image_tag: str) -> Any:
    try:
        return docker_client.images.get(image_tag)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"image {image_tag} not found: build it first with `make image` "
            f"(or `bash scripts/build-image.sh {image_version()}`)",
            pytrace=False,
        )


@dataclass
class Running:
    container: Any
    port: int
    data_dir: Path | None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=5, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.url + path, timeout=5, **kwargs)

    def logs(self) -> str:
        return str(self.container.logs().decode(errors="replace"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A stand-in for the shared volume, owned by the app's uid as the deployment does."""
    path = tmp_path / "volume"
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, APP_UID, APP_UID)
    else:
        path.chmod(0o777)
    return path


@pytest.fixture
def start(docker_client: Any, image: Any) -> Iterator[Callable[..., Running]]:
    """Start hardened containers of the image; every one is removed at teardown."""
    started: list[Any] = []

    def _start(data_dir: Path | None, *, read_only: bool = True) -> Running:
        volumes = {}
        if data_dir is not None:
            volumes[str(data_dir)] = {"bind": "/data/apptive", "mode": "rw"}
        container = docker_client.containers.run(
            image.id,
            detach=True,
            name=f"{NAME_PREFIX}{uuid.uuid4().hex[:12]}",
            labels={LABEL: "1"},
            environment={"APPTIVE_INSTANCE": INSTANCE},
            # Loopback only, on a port the engine picks: nothing else can reach it.
            ports={"3600/tcp": (LOOPBACK, None)},
            volumes=volumes,
            read_only=read_only,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit="256m",
        )
        started.append(container)
        running = Running(container, _host_port(container), data_dir)
        _wait_until_answering(running)
        return running

    yield _start
    for container in started:
        # Already gone is fine: a test may have removed its own container.
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def _host_port(container: Any) -> int:
    deadline = time.monotonic() + 10
    while True:
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"].get("3600/tcp")
        if bindings:
            return int(bindings[0]["HostPort"])
        if container.status == "exited" or time.monotonic() > deadline:
            raise AssertionError(f"no port published:\n{container.logs().decode()}")
        time.sleep(0.1)


def _wait_until_answering(running: Running) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            running.get("/health")
            return
        except requests.ConnectionError:
            pass
        running.container.reload()
        if running.container.status == "exited":
            raise AssertionError(f"container exited at start:\n{running.logs()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer on /health within 30 s:\n{running.logs()}")
        time.sleep(0.2)
