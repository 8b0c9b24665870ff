"""Fixtures for the monitoring tests: the repository's paths and promtool."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
COLLECTOR = REPO / "roles" / "gluster_metrics" / "files" / "gluster_metrics.py"
# Debian's `prometheus` package ships promtool; `make tools` installs it.
PROMTOOL_PACKAGE = "prometheus"


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool's path. Missing, it skips the test locally and fails it in CI (CI=true)."""
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if path:
        return path
    message = (
        f"promtool not found: install Debian's '{PROMTOOL_PACKAGE}' package "
        "(apt-get install --no-install-recommends prometheus, or `make tools`)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must run these checks", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def collector() -> ModuleType:
    """roles/gluster_metrics/files/gluster_metrics.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("gluster_metrics", COLLECTOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
