"""Every user is served by one container whichever load balancer it reaches."""

from __future__ import annotations

from collections import Counter, defaultdict

import requests
from conftest import LB_URLS, Lab


def _record_url(lb: str, user: str, key: str = "profile") -> str:
    return f"{LB_URLS[lb]}/api/users/{user}/records/{key}"


def test_users_written_through_lb1_read_back_through_both(
    lab: Lab, http: requests.Session, user_ids: list[str]
) -> None:
    served_by: dict[str, set[str]] = defaultdict(set)
    for user in user_ids:
        body = {"user": user, "note": f"written for {user}"}
        put = http.put(_record_url("lb1", user), json=body, timeout=10)
        assert put.status_code in (200, 201), (user, put.status_code, put.text)
        served_by[user].add(put.headers["X-Served-By"])

    for lb in ("lb1", "lb2"):
        for user in user_ids:
            got = http.get(_record_url(lb, user), timeout=10)
            assert got.status_code == 200, (lb, user, got.status_code, got.text)
            assert got.json() == {"user": user, "note": f"written for {user}"}
            served_by[user].add(got.headers["X-Served-By"])
            listed = http.get(f"{LB_URLS[lb]}/api/users/{user}/records", timeout=10)
            assert listed.json()["keys"] == ["profile"]
            served_by[user].add(listed.headers["X-Served-By"])

    moved = {user: sorted(names) for user, names in served_by.items() if len(names) != 1}
    assert not moved, f"users served by more than one container: {moved}"

    per_container = Counter(next(iter(names)) for names in served_by.values())
    assert set(per_container) <= lab.containers, set(per_container) - lab.containers
    assert set(per_container) == lab.containers, (
        f"containers that got no user: {sorted(lab.containers - set(per_container))}; "
        f"spread: {dict(per_container)}"
    )


def test_non_user_paths_are_not_pinned(lab: Lab, http: requests.Session) -> None:
    seen = {
        http.get(f"{LB_URLS['lb1']}/health", timeout=5).headers["X-Served-By"] for _ in range(40)
    }
    assert len(seen) > 1, "health checks through the LB should spread, not stick"
