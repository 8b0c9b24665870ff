"""Runtime configuration, read once from the environment and validated up front.

A bad value stops the process at start with a message naming the variable, instead of
surfacing later as a confusing runtime error on the first request.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from apptive_api import __version__

DEFAULT_DATA_DIR = "/data/apptive"
DEFAULT_HOST = "0.0.0.0"  # the container's own interface; the host publishes it selectively
DEFAULT_PORT = 3600
# The owner cache (owner_cache.py): how many user databases each container keeps open, and how
# long an unused one stays open. The idle timeout bounds how long a handover to a new owner waits.
DEFAULT_STORE_CACHE_SIZE = 256
DEFAULT_STORE_IDLE_TIMEOUT_S = 10.0
# Must exceed the idle timeout plus one sweep (see Config.__post_init__) so a new owner outwaits
# the old owner's idle close, and stay below HAProxy's `timeout server` (30 s) so a waiting
# request ends as our 503 with Retry-After, not as HAProxy's 504.
DEFAULT_BUSY_TIMEOUT_MS = 15000
# The sweeper that closes idle connections wakes at most this far apart.
MAX_SWEEP_INTERVAL_S = 1.0
# Below Docker's default 10 s stop timeout, so in-flight requests finish before SIGKILL.
DEFAULT_GRACEFUL_TIMEOUT_S = 8.0
# HAProxy and Docker probe every 2 s: a probe stuck on a hung FUSE mount must answer 503 in time.
DEFAULT_HEALTH_TIMEOUT_S = 1.5
# Longer than HAProxy keeps an idle server-side connection for reuse: if the app closed first,
# HAProxy could send a request down a connection that is being closed and answer 502.
DEFAULT_KEEPALIVE_TIMEOUT_S = 65
MAX_BODY_BYTES = 1024 * 1024
# Each cached entry holds two file descriptors (database and its journal) and up to
# owner_cache.PAGE_CACHE_KIB of page cache; beyond this a container's memory limit is the bound.
MAX_STORE_CACHE_SIZE = 4096

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# The instance name goes into a response header: printable ASCII only, no CR/LF injection.
_INSTANCE_RE = re.compile(r"[\x21-\x7e]{1,255}")
_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    instance: str = "localhost"
    version: str = __version__
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S
    health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
    keepalive_timeout_s: int = DEFAULT_KEEPALIVE_TIMEOUT_S
    max_body_bytes: int = MAX_BODY_BYTES
    log_level: str = "info"
    access_log: bool = False
    store_cache_size: int = DEFAULT_STORE_CACHE_SIZE
    store_idle_timeout_s: float = DEFAULT_STORE_IDLE_TIMEOUT_S

    def __post_init__(self) -> None:
        # Checked here rather than in from_env so that no Config, however built, breaks the rule.
        if self.store_cache_size == 0:
            return  # no cache: nothing is held between requests, so nothing to outwait
        longest_hold_s = self.store_idle_timeout_s + self.store_sweep_interval_s
        if self.busy_timeout_ms <= longest_hold_s * 1000:
            raise ConfigError(
                f"APPTIVE_BUSY_TIMEOUT_MS={self.busy_timeout_ms} must be longer than "
                f"APPTIVE_STORE_IDLE_TIMEOUT ({self.store_idle_timeout_s:g} s) plus one sweep "
                f"({self.store_sweep_interval_s:g} s), i.e. above {longest_hold_s * 1000:g} ms: "
                "a new owner must outwait the old owner's idle close instead of failing "
                "(or set APPTIVE_STORE_CACHE_SIZE=0 to disable the cache)"
            )

    @property
    def store_sweep_interval_s(self) -> float:
        """How often the owner cache looks for idle connections: an idle connection stays open
        at most idle timeout + this long."""
        return min(MAX_SWEEP_INTERVAL_S, self.store_idle_timeout_s / 4)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            data_dir=_data_dir(env),
            host=_str(env, "APPTIVE_HOST", DEFAULT_HOST),
            port=_int(env, "APPTIVE_PORT", DEFAULT_PORT, minimum=1, maximum=65535),
            instance=_instance(env),
            version=_version(env),
            busy_timeout_ms=_int(
                env, "APPTIVE_BUSY_TIMEOUT_MS", DEFAULT_BUSY_TIMEOUT_MS, minimum=0, maximum=600_000
            ),
            graceful_timeout_s=_float(
                env, "APPTIVE_GRACEFUL_TIMEOUT", DEFAULT_GRACEFUL_TIMEOUT_S, minimum=0, maximum=3600
            ),
            health_timeout_s=_float(
                env, "APPTIVE_HEALTH_TIMEOUT", DEFAULT_HEALTH_TIMEOUT_S, minimum=0.05, maximum=60
            ),
            keepalive_timeout_s=_int(
                env,
                "APPTIVE_KEEPALIVE_TIMEOUT",
                DEFAULT_KEEPALIVE_TIMEOUT_S,
                minimum=1,
                maximum=3600,
            ),
            log_level=_choice(env, "APPTIVE_LOG_LEVEL", "info", LOG_LEVELS),
            access_log=_bool(env, "APPTIVE_ACCESS_LOG", False),
            store_cache_size=_int(
                env,
                "APPTIVE_STORE_CACHE_SIZE",
                DEFAULT_STORE_CACHE_SIZE,
                minimum=0,
                maximum=MAX_STORE_CACHE_SIZE,
            ),
            store_idle_timeout_s=_float(
                env,
                "APPTIVE_STORE_IDLE_TIMEOUT",
                DEFAULT_STORE_IDLE_TIMEOUT_S,
                minimum=0.05,
                maximum=3600,
            ),
        )


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    # An empty variable (VAR= in a compose file) means "not set", not "set to nothing".
    return value or None


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    return _raw(env, name) or default


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = _raw(env, name)
    if raw is None:
        return default
    # isdecimal() also accepts non-ASCII digits; int() would take them, an operator would not.
    if not (raw.isascii() and raw.isdecimal()):
        raise ConfigError(f"{name}={raw!r}: expected an integer in [{minimum}, {maximum}]")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r}: expected an integer in [{minimum}, {maximum}]")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds") from None
    if not minimum <= value <= maximum:  # also rejects nan
        raise ConfigError(f"{name}={raw!r}: expected a number in [{minimum}, {maximum}]")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected one of true/false/1/0/yes/no/on/off")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _raw(env, name)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw.lower()


def _data_dir(env: Mapping[str, str]) -> Path:
    raw = _raw(env, "APPTIVE_DATA_DIR") or DEFAULT_DATA_DIR
    path = Path(raw)
    # A relative path would depend on the working directory of whoever started the process.
    if not path.is_absolute():
        raise ConfigError(f"APPTIVE_DATA_DIR={raw!r}: must be an absolute path")
    return path


def _instance(env: Mapping[str, str]) -> str:
    raw = _raw(env, "APPTIVE_INSTANCE") or socket.gethostname() or "unknown"
    if not _INSTANCE_RE.fullmatch(raw):
        raise ConfigError(
            f"APPTIVE_INSTANCE={raw!r}: expected 1-255 printable ASCII characters, no spaces"
        )
    return raw


def _version(env: Mapping[str, str]) -> str:
    raw = _raw(env, "APPTIVE_VERSION")
    if raw is None:
        return __version__
    if not _VERSION_RE.fullmatch(raw):
        raise ConfigError(f"APPTIVE_VERSION={raw!r}: expected a version such as 1.0.1")
    return raw
