"""Each load balancer on its own: package, configuration, service, listeners, runtime API."""

import time

import pytest

testinfra_hosts = ["lb"]

CONFIG = "/etc/haproxy/haproxy.cfg"
SOCKET = "/run/haproxy/admin.sock"
BACKEND = "apptive_api"


def runtime(host, command: str) -> str:
    """One command on the runtime API (the admin unix socket inside the host)."""
    return host.check_output(f"echo '{command}' | socat stdio {SOCKET}")


def address(host) -> str:
    return host.check_output("hostname -I").split()[0]


def test_haproxy_installed_enabled_running(host):
    assert host.package("haproxy").is_installed
    service = host.service("haproxy")
    assert service.is_enabled
    assert service.is_running


def test_configuration_is_valid_and_private(host):
    assert host.run(f"haproxy -c -q -f {CONFIG}").rc == 0
    config = host.file(CONFIG)
    assert config.user == "root"
    assert config.group == "haproxy"
    assert config.mode == 0o640
    assert "Ansible managed" in config.content_string


def test_configuration_names_this_host_as_local_peer(host):
    content = host.file(CONFIG).content_string
    name = host.backend.get_hostname()
    assert f"localpeer {name}\n" in content
    assert f"peer {name} {address(host)}:10000" in content
    assert "stick on path,word(3,/) if { path_beg /api/users/ }" in content


def test_listeners(host):
    ip = address(host)
    # Clients on every address; stats, metrics and peers on the internal address only.
    assert host.socket("tcp://0.0.0.0:80").is_listening
    assert host.socket(f"tcp://{ip}:8404").is_listening
    assert not host.socket("tcp://0.0.0.0:8404").is_listening
    assert host.socket(f"tcp://{ip}:10000").is_listening


def test_runtime_socket_is_local_and_admin(host):
    sock = host.file(SOCKET)
    assert sock.is_socket
    assert sock.mode == 0o660
    assert sock.group == "haproxy"
    assert "Name: HAProxy" in runtime(host, "show info")


def test_both_backend_servers_are_up(host):
    states = {}
    for _ in range(30):
        lines = runtime(host, "show stat").splitlines()
        fields = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(fields, line.split(","), strict=False)) for line in lines[1:] if line]
        states = {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }
        if states and all(status == "UP" for status in states.values()):
            break
        time.sleep(1)
    assert states == {"app1": "UP", "app2": "UP"}


@pytest.mark.parametrize("path", ["/api/users/7/records", "/health"])
def test_frontend_answers_inside_the_host(host, path):
    out = host.check_output(
        "python3 -c 'import sys, urllib.request as u; "
        'r = u.urlopen(sys.argv[1], timeout=5); print(r.status, r.headers["X-LB"])\' '
        f"http://127.0.0.1{path}"
    )
    assert out == f"200 {host.backend.get_hostname()}"
