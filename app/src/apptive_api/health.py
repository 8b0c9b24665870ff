"""The /health probe: the readiness check, bounded in time and off the event loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

from apptive_api.readiness import Readiness, check_data_dir

log = logging.getLogger("apptive_api.health")


class HealthProbe:
    def __init__(
        self,
        data_dir: Path,
        timeout_s: float,
        on_result: Callable[[bool], None] = lambda ready: None,
        check: Callable[[Path], Readiness] = check_data_dir,
    ) -> None:
        self._data_dir = data_dir
        self._timeout_s = timeout_s
        self._on_result = on_result
        self._check = check
        # A separate, small pool: probes stuck on a hung FUSE mount must not take the threads
        # that serve requests, and requests must not starve the probes.
        self._limiter = anyio.CapacityLimiter(4)
        self._last_reason = ""

    async def check(self) -> Readiness:
        state = Readiness(False, "health check timed out (storage not responding)")
        # abandon_on_cancel: on timeout answer 503 now; the stuck thread finishes on its own.
        with anyio.move_on_after(self._timeout_s):
            state = await anyio.to_thread.run_sync(
                self._check, self._data_dir, abandon_on_cancel=True, limiter=self._limiter
            )
        self._on_result(state.ready)
        if state.reason != self._last_reason:
            # Log transitions only: a probe every 2 s would otherwise flood the log.
            if state.ready:
                log.info("store ready")
            else:
                log.warning("store unavailable: %s", state.reason)
            self._last_reason = state.reason
        return state
