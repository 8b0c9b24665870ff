"""The real entry point in a subprocess on 127.0.0.1: graceful SIGTERM, config errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from apptive_api.readiness import SENTINEL_NAME

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("APPTIVE_") and k != "PYTHONPATH"
    }
    env.update(
        APPTIVE_DATA_DIR=str(data_dir),
        APPTIVE_HOST=HOST,
        APPTIVE_PORT=str(port),
        APPTIVE_INSTANCE="proc-test/apptive-api-1",
        APPTIVE_GRACEFUL_TIMEOUT="10",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_until_in_flight(port: int) -> None:
    """Until the app is inside the PUT handler, waiting for the rest of the body."""
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
        gauge = re.search(r"^apptive_http_requests_in_flight (\S+)$", text, re.MULTILINE)
        # The /metrics request itself is one of them.
        if gauge and float(gauge.group(1)) >= 2:
            return
        assert time.monotonic() < deadline, "the slow request never reached the app"
        time.sleep(0.05)


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, data_dir: Path) -> None:
        self.proc = proc
        self.port = port
        self.data_dir = data_dir

    def output(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        return out.decode(errors="replace")


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "apptive_api"],
        env=_env(data_dir, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    srv = Server(proc, port, data_dir)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"server exited early:\n{srv.output()}"
            try:
                if _health(port) == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy in 20 s"
            time.sleep(0.05)
        yield srv
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    sock.settimeout(15)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


def test_sigterm_lets_in_flight_request_finish(server: Server) -> None:
    body = json.dumps({"payload": "x" * 1000}).encode()
    half = len(body) // 2
    sock = socket.create_connection((HOST, server.port), timeout=5)
    try:
        sock.sendall(
            b"PUT /api/users/77/records/inflight HTTP/1.1\r\n"
            b"Host: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:half]
        )
        _wait_until_in_flight(server.port)

        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None, "exited with a request still in flight"
        # Draining: new connections are no longer accepted.
        with pytest.raises(OSError):
            socket.create_connection((HOST, server.port), timeout=1).close()

        sock.sendall(body[half:])
        status, headers, payload = _read_response(sock)
    finally:
        sock.close()

    assert status == 201, payload
    assert json.loads(payload)["created"] is True
    assert headers["x-served-by"] == "proc-test/apptive-api-1"
    assert server.proc.wait(timeout=15) == 0, server.output()
    # The write really happened before the process went away.
    assert list(server.data_dir.rglob("77.sqlite3"))


def test_idle_server_exits_zero_on_sigterm(server: Server) -> None:
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert any("Finished server process" in line["msg"] for line in lines)


def test_container_healthcheck_command(server: Server) -> None:
    env = _env(server.data_dir, server.port)

    def healthcheck() -> int:
        cmd = [sys.executable, "-m", "apptive_api.healthcheck"]
        return subprocess.run(cmd, env=env, capture_output=True, timeout=10).returncode

    assert healthcheck() == 0
    (server.data_dir / SENTINEL_NAME).unlink()
    assert healthcheck() == 1


def test_bad_configuration_exits_2_with_message(data_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "apptive_api"],
        env=_env(data_dir, 1, APPTIVE_PORT="not-a-port"),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"APPTIVE_PORT" in result.stderr
    assert b"Traceback" not in result.stderr
