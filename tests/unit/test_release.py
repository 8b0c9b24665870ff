"""The release site.yml deploys is the one `make image` builds from the app's metadata."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_site_deploys_the_app_version() -> None:
    app = tomllib.loads((REPO / "app/pyproject.toml").read_text())["project"]["version"]
    site = yaml.safe_load((REPO / "group_vars/all/main.yml").read_text())["apptive_api_version"]
    assert site == app, (
        f"group_vars/all/main.yml deploys {site} but app/pyproject.toml is {app}: "
        "bump both together (make image builds the app's version)"
    )
