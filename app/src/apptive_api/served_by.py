"""Adds X-Served-By to every response, including errors produced outside the router."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Served-By"


class ServedByMiddleware:
    def __init__(self, app: ASGIApp, instance: str) -> None:
        self.app = app
        self.instance = instance

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = self.instance
            await send(message)

        await self.app(scope, receive, send_wrapper)
