"""Fixtures for the hardening tests: testinfra hosts on the lab's host containers
(`docker://<container>`), one test per inventory host of the group a test asks for.
"""

from __future__ import annotations

from typing import Any

import pytest
import testinfra
from labhosts import container, hosts, inventory


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture, group in (
        ("api_host", "api"),
        ("lb_host", "lb"),
        ("storage_host", "storage"),
        ("any_host", "all"),
    ):
        if fixture in metafunc.fixturenames:
            names = sorted(inventory()["_meta"]["hostvars"]) if group == "all" else hosts(group)
            metafunc.parametrize(fixture, names)


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Any:
    """The testinfra host of whichever inventory host the test is parametrised with."""
    for name in ("api_host", "lb_host", "storage_host", "any_host"):
        if name in request.fixturenames:
            return testinfra.get_host(f"docker://{container(request.getfixturevalue(name))}")
    raise LookupError("no host fixture")
