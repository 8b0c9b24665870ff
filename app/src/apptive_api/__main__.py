"""Entry point: `python -m apptive_api`. Reads the environment, runs uvicorn in-process."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn

from apptive_api.app import create_app
from apptive_api.config import Config, ConfigError
from apptive_api.logs import log_config


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> int:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"apptive-api: configuration error: {exc}", file=sys.stderr)
        return 2

    # uvicorn catches SIGTERM itself, drains in-flight requests, then re-raises the signal
    # with the handler that was installed before it started. Installing this one first makes
    # that final re-raise an exit with status 0, so `docker stop` reports a clean stop.
    # It also covers a SIGTERM that arrives before uvicorn has taken over.
    signal.signal(signal.SIGTERM, _exit_cleanly)

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.host,
            port=config.port,
            http="h11",
            loop="asyncio",
            ws="none",
            lifespan="on",
            log_config=log_config(config.log_level, config.instance),
            log_level=config.log_level,
            access_log=config.access_log,
            server_header=False,
            timeout_graceful_shutdown=config.graceful_timeout_s,
            timeout_keep_alive=config.keepalive_timeout_s,
            # HAProxy in front adds X-Forwarded-For; there is nothing to trust it for here.
            proxy_headers=False,
        )
    )
    server.run()
    # uvicorn returns normally when startup failed (e.g. the port is taken).
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
