"""A counting reverse proxy in front of the Prefect API: what a serving process asks of the server.

The benchmark points serve.py (and the run processes it starts) at this proxy instead of the
server; every HTTP request and every websocket message passes through and is counted by route.
It runs in a thread of the benchmark's own process, on a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import Counter

import httpx
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.typing import Subprotocol

from devstack.supervision.processes import free_port, wait_until

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


def route_of(method: str, path: str) -> str:
    """`POST /api/flow_runs/<id>/set_state` for any id."""
    return f"{method} {_ID.sub('<id>', path)}"


class ApiCounter:
    """Forwards to `target` (e.g. http://127.0.0.1:4200) and counts what passes, by route."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.port = free_port()
        self.requests: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()  # websocket messages, client to server, by route
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        with self._lock:
            return Counter(self.requests), Counter(self.messages)

    def start(self) -> ApiCounter:
        app = Starlette(
            routes=[
                WebSocketRoute("/{path:path}", self._websocket),
                Route("/{path:path}", self._http, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", ws_ping_interval=None
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, name="api-counter", daemon=True)
        self._thread.start()
        wait_until(lambda: server.started, 10, "the API counter to listen")
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
        if self._thread:
            self._thread.join(10)

    def _count(self, counter: Counter[str], key: str) -> None:
        with self._lock:
            counter[key] += 1

    async def _http(self, request: Request) -> Response:
        self._count(self.requests, route_of(request.method, request.url.path))
        headers = {name: value for name, value in request.headers.items() if name.lower() not in _HOP_BY_HOP}
        async with httpx.AsyncClient(timeout=120) as client:
            upstream = await client.request(
                request.method,
                self.target + request.url.path,
                params=request.query_params,
                content=await request.body(),
                headers=headers,
            )
        kept = {name: value for name, value in upstream.headers.items() if name.lower() not in _HOP_BY_HOP}
        return Response(upstream.content, upstream.status_code, kept)

    async def _websocket(self, client: WebSocket) -> None:
        route = route_of("WS", client.url.path)
        self._count(self.requests, route)
        url = "ws" + self.target.removeprefix("http") + client.url.path
        # Prefect's clients speak the `prefect` subprotocol: ask the server for it, accept what it chose.
        offered = [Subprotocol(name) for name in client.scope.get("subprotocols", [])]
        async with websockets.connect(
            url, subprotocols=offered or None, max_size=None, ping_interval=None
        ) as server:
            await client.accept(subprotocol=server.subprotocol)

            async def upstream() -> None:
                with contextlib.suppress(WebSocketDisconnect, websockets.ConnectionClosed):
                    while True:
                        message = await client.receive_text()
                        self._count(self.messages, route)
                        await server.send(message)

            async def downstream() -> None:
                with contextlib.suppress(websockets.ConnectionClosed, RuntimeError):
                    async for message in server:
                        await client.send_text(message if isinstance(message, str) else message.decode())

            tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the client may have gone first
            await client.close()
