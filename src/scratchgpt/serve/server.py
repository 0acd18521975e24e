"""The HTTP side of ``scratchgpt serve``: uvicorn with bounds against bad clients.

- A connection must send a request's headers within ``header_timeout`` seconds of connecting or
  of starting the request (uvicorn alone waits for ever: a slow-headers client would hold the
  connection); it is closed otherwise.
- A body must arrive within ``body_timeout`` seconds (408 otherwise) and hold at most
  ``max_body`` bytes (413, before reading it when Content-Length says so).
- At most ``max_connections`` open connections (uvicorn answers 503 past that).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

MAX_BODY = 1 << 20  # 1 MiB


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers take longer than
    ``seconds`` to arrive (counted from the connection, or from the first byte of a later
    request on a kept-alive connection)."""

    class Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE and self._deadline is None:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc):  # type: ignore[no-untyped-def]
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.warning("closed a connection whose request headers took over %gs", seconds)
                self.transport.close()

    return Protocol


class BodyLimits:
    """ASGI middleware: read the whole body first, bounded in size and time, then hand it to the
    app (a later ``receive`` is the server's, which tells of a disconnect)."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY, body_timeout: float = 30.0) -> None:
        self.app, self.max_body, self.body_timeout = app, max_body, body_timeout

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await refuse(send, 413, f"the body has {int(declared)} bytes; at most {self.max_body} are accepted")
            return
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                await refuse(send, 408, f"the body did not arrive within {self.body_timeout:g}s")
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await refuse(send, 413, f"the body is over {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def make_server(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    header_timeout: float = 10.0,
    body_timeout: float = 30.0,
    max_body: int = MAX_BODY,
    max_connections: int = 64,
    log_level: str = "info",
) -> uvicorn.Server:
    config = uvicorn.Config(
        BodyLimits(app, max_body, body_timeout),
        host=host,
        port=port,
        http=header_timeout_protocol(header_timeout),
        lifespan="off",
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
        log_level=log_level,
        log_config=None,
    )
    return uvicorn.Server(config)


class Background:
    """A server in a thread of this process (tests, benchmarks): ``with Background(server) as url``."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped while starting")
            self.thread.join(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
