"""Configuration from the environment: defaults, overrides, and clear errors."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest

import apptive_api
from apptive_api.config import Config, ConfigError


def test_defaults() -> None:
    config = Config.from_env({})
    assert config.data_dir == Path("/data/apptive")
    assert config.host == "0.0.0.0"
    assert config.port == 3600
    assert config.instance == socket.gethostname()
    assert config.version == apptive_api.__version__
    assert config.busy_timeout_ms == 15000
    assert config.store_cache_size == 256
    assert config.store_idle_timeout_s == 10.0
    assert config.store_sweep_interval_s == 1.0
    assert config.max_body_bytes == 1024 * 1024
    assert config.access_log is False


def test_package_version_comes_from_metadata() -> None:
    # The installed metadata must match the source of truth (a stale editable install would not).
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert apptive_api.__version__ == pyproject["project"]["version"]


def test_overrides() -> None:
    config = Config.from_env(
        {
            "APPTIVE_DATA_DIR": "/srv/data",
            "APPTIVE_HOST": "127.0.0.1",
            "APPTIVE_PORT": "8080",
            "APPTIVE_INSTANCE": "node1/apptive-api-2",
            "APPTIVE_VERSION": "1.0.1",
            "APPTIVE_BUSY_TIMEOUT_MS": "3000",
            "APPTIVE_GRACEFUL_TIMEOUT": "2.5",
            "APPTIVE_HEALTH_TIMEOUT": "0.5",
            "APPTIVE_KEEPALIVE_TIMEOUT": "30",
            "APPTIVE_LOG_LEVEL": "DEBUG",
            "APPTIVE_ACCESS_LOG": "yes",
            "APPTIVE_STORE_CACHE_SIZE": "1000",
            "APPTIVE_STORE_IDLE_TIMEOUT": "2",
        }
    )
    assert config == Config(
        data_dir=Path("/srv/data"),
        host="127.0.0.1",
        port=8080,
        instance="node1/apptive-api-2",
        version="1.0.1",
        busy_timeout_ms=3000,
        graceful_timeout_s=2.5,
        health_timeout_s=0.5,
        keepalive_timeout_s=30,
        log_level="debug",
        access_log=True,
        store_cache_size=1000,
        store_idle_timeout_s=2.0,
    )


def test_empty_values_mean_default() -> None:
    config = Config.from_env({"APPTIVE_PORT": "", "APPTIVE_VERSION": " ", "APPTIVE_INSTANCE": ""})
    assert config.port == 3600
    assert config.version == apptive_api.__version__
    assert config.instance == socket.gethostname()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APPTIVE_PORT", "http"),
        ("APPTIVE_PORT", "0"),
        ("APPTIVE_PORT", "65536"),
        ("APPTIVE_PORT", "-1"),
        ("APPTIVE_PORT", "\u0663\u0666\u0660\u0660"),
        ("APPTIVE_BUSY_TIMEOUT_MS", "1.5"),
        ("APPTIVE_BUSY_TIMEOUT_MS", "-5"),
        ("APPTIVE_GRACEFUL_TIMEOUT", "soon"),
        ("APPTIVE_GRACEFUL_TIMEOUT", "nan"),
        ("APPTIVE_GRACEFUL_TIMEOUT", "-1"),
        ("APPTIVE_HEALTH_TIMEOUT", "0"),
        ("APPTIVE_KEEPALIVE_TIMEOUT", "0"),
        ("APPTIVE_DATA_DIR", "relative/dir"),
        ("APPTIVE_INSTANCE", "has space"),
        ("APPTIVE_INSTANCE", "x\r\nSet-Cookie: a=b"),
        ("APPTIVE_INSTANCE", "x" * 256),
        ("APPTIVE_VERSION", "1.0 beta"),
        ("APPTIVE_LOG_LEVEL", "loud"),
        ("APPTIVE_ACCESS_LOG", "maybe"),
        ("APPTIVE_STORE_CACHE_SIZE", "-1"),
        ("APPTIVE_STORE_CACHE_SIZE", "lots"),
        ("APPTIVE_STORE_CACHE_SIZE", "4097"),
        ("APPTIVE_STORE_IDLE_TIMEOUT", "0"),
        ("APPTIVE_STORE_IDLE_TIMEOUT", "forever"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_busy_timeout_must_outlast_the_idle_timeout() -> None:
    # Default idle timeout 10 s + one 1 s sweep: an old owner may hold a lock for 11 s.
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env({"APPTIVE_BUSY_TIMEOUT_MS": "11000"})
    message = str(excinfo.value)
    assert "APPTIVE_BUSY_TIMEOUT_MS=11000" in message
    assert "APPTIVE_STORE_IDLE_TIMEOUT" in message
    assert Config.from_env({"APPTIVE_BUSY_TIMEOUT_MS": "11001"}).busy_timeout_ms == 11001
    with pytest.raises(ConfigError, match="APPTIVE_BUSY_TIMEOUT_MS=3000"):
        Config.from_env({"APPTIVE_STORE_IDLE_TIMEOUT": "3", "APPTIVE_BUSY_TIMEOUT_MS": "3000"})
    # Short idle timeouts sweep more often: 1 s idle, 0.25 s sweep.
    assert Config.from_env(
        {"APPTIVE_STORE_IDLE_TIMEOUT": "1", "APPTIVE_BUSY_TIMEOUT_MS": "1300"}
    ).store_sweep_interval_s == pytest.approx(0.25)
    # The rule holds for a Config built in code too, not only from the environment.
    with pytest.raises(ConfigError):
        Config(busy_timeout_ms=1000, store_idle_timeout_s=5)


def test_cache_off_needs_no_long_busy_timeout() -> None:
    config = Config.from_env({"APPTIVE_STORE_CACHE_SIZE": "0", "APPTIVE_BUSY_TIMEOUT_MS": "100"})
    assert config.store_cache_size == 0
    assert config.busy_timeout_ms == 100
