"""Behaviour across both load balancers, seen from the controller through 127.0.0.1 ports:
stickiness shared through the peers section, stats and metrics, a reload that loses nothing."""

import re
import threading
import time

import requests

BACKEND = "apptive_api"
SOCKET = "/run/haproxy/admin.sock"
MASTER_SOCKET = "/run/haproxy-master.sock"


def url(published: dict, lb: str, container_port: int, path: str) -> str:
    return f"http://127.0.0.1:{published[lb][container_port]}{path}"


def get(published: dict, lb: str, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 10)
    return requests.get(url(published, lb, 80, path), **kwargs)


def table_keys(host) -> set[str]:
    """Keys of the backend's stick table on this host (none while the socket does not answer)."""
    result = host.run(f"echo 'show table {BACKEND}' | socat stdio {SOCKET}")
    return set(re.findall(r"key=(\S+)", result.stdout)) if result.rc == 0 else set()


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def current_workers(host) -> set[str]:
    """PIDs of the master's current (not old) workers, from the master CLI; none while the
    master re-executes itself and its socket does not answer."""
    result = host.run(f"echo 'show proc' | socat stdio {MASTER_SOCKET}")
    if result.rc != 0:
        return set()
    workers, section = set(), None
    for line in result.stdout.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").split()[0] if line.strip("# ") else None
            continue
        fields = line.split()
        if section == "workers" and len(fields) > 1 and fields[1] == "worker":
            workers.add(fields[0])
    return workers


def main_pid(host) -> str:
    return host.check_output("systemctl show --property MainPID --value haproxy")


def test_a_user_sticks_to_one_server_through_both_lbs(lbs, published):
    first, second = sorted(lbs)
    served = {}
    for user in range(1, 13):
        path = f"/api/users/{user}/records"
        answers = {get(published, first, path).headers["X-Served-By"] for _ in range(3)}
        assert len(answers) == 1, f"user {user} was served by {answers} through {first}"
        served[user] = answers.pop()
    # leastconn spreads new users: stickiness is per user, not one server for everybody.
    assert len(set(served.values())) == 2, served

    assert wait_for(lambda: {str(u) for u in served} <= table_keys(lbs[second])), (
        f"{second} did not learn the stick entries from {first}"
    )
    for user, server in served.items():
        response = get(published, second, f"/api/users/{user}/records")
        assert response.status_code == 200
        assert response.headers["X-LB"] == second
        assert response.headers["X-Served-By"] == server, f"user {user} moved on {second}"


def test_stick_entry_is_in_both_tables(lbs, published):
    # Learned on the second LB this time: replication works both ways.
    second = sorted(lbs)[1]
    assert get(published, second, "/api/users/42/records").status_code == 200
    for name, host in lbs.items():
        assert wait_for(lambda h=host: "42" in table_keys(h)), f"no entry for user 42 on {name}"


def test_stats_page_needs_the_password(lbs, published, stats_credentials):
    user, password = stats_credentials
    for lb in lbs:
        stats = url(published, lb, 8404, "/stats")
        assert requests.get(stats, timeout=10).status_code == 401
        assert requests.get(stats, auth=(user, "wrong"), timeout=10).status_code == 401
        response = requests.get(stats, auth=(user, password), timeout=10)
        assert response.status_code == 200
        assert BACKEND in response.text


def test_metrics_are_exposed_without_password(lbs, published):
    for lb in lbs:
        response = requests.get(url(published, lb, 8404, "/metrics"), timeout=10)
        assert response.status_code == 200
        assert "haproxy_process_" in response.text
        assert f'haproxy_backend_active_servers{{proxy="{BACKEND}"}} 2' in response.text


def test_reload_keeps_master_stick_table_and_connections(lbs, published):
    first = sorted(lbs)[0]
    host = lbs[first]
    assert get(published, first, "/api/users/4242/records").status_code == 200
    assert wait_for(lambda: "4242" in table_keys(host))
    master, workers = main_pid(host), current_workers(host)
    assert workers

    # New connections keep coming during the reload; none may fail.
    failures, stop = [], threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                response = get(published, first, "/health", headers={"Connection": "close"})
                if response.status_code != 200:
                    failures.append(response.status_code)
            except requests.RequestException as error:
                failures.append(repr(error))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(0.5)
        host.check_output("systemctl reload haproxy")
        new_workers = wait_for(lambda: current_workers(host) - workers)
        time.sleep(1)
    finally:
        stop.set()
        thread.join()

    assert new_workers, "no new worker after the reload"
    assert main_pid(host) == master, "the master was restarted, not reloaded"
    assert failures == []
    assert wait_for(lambda: "4242" in table_keys(host)), "the new worker lost the stick table"
