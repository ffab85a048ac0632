"""A stand-in for Prefect Cloud's webhooks API on a loopback port, recording every request.

Prefect Cloud cannot be reached from this machine, so provisioning is tested against this
real HTTP server instead. It answers as Prefect Cloud's API does for the calls that
`prefect cloud webhook` and Prefect's Terraform provider make: `POST webhooks/filter` (a list),
`POST webhooks/` (201, the webhook with its generated `slug`), `GET`/`PUT webhooks/<id>`.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack.supervision.processes import free_port, wait_until

_FIELDS = ("name", "description", "template", "enabled", "service_account_id")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any
    authorization: str | None


@dataclass
class PrefectCloudDouble:
    """One Cloud workspace's webhooks, served on 127.0.0.1 while the double runs."""

    api_key: str = "pnu_test_key"
    account: str = field(default_factory=lambda: str(uuid.uuid4()))
    workspace: str = field(default_factory=lambda: str(uuid.uuid4()))
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    port: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/accounts/{self.account}/workspaces/{self.workspace}"

    def add(self, **fields: Any) -> dict[str, Any]:
        """A webhook that already exists in the workspace."""
        now = datetime.now(UTC).isoformat()
        webhook = {
            "id": str(uuid.uuid4()),
            "created": now,
            "updated": now,
            "account": self.account,
            "workspace": self.workspace,
            "slug": secrets.token_urlsafe(16),
            "description": "",
            "enabled": True,
            "service_account_id": None,
            **fields,
        }
        self.webhooks[webhook["id"]] = webhook
        return webhook

    def __enter__(self) -> PrefectCloudDouble:
        prefix = f"/api/accounts/{self.account}/workspaces/{self.workspace}/webhooks"
        app = Starlette(
            routes=[
                Route(f"{prefix}/filter", self._filter, methods=["POST"]),
                Route(f"{prefix}/", self._create, methods=["POST"]),
                Route(f"{prefix}/{{webhook_id}}", self._one, methods=["GET", "PUT"]),
            ]
        )
        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server.started, 10, "the Prefect Cloud double to listen")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def _receive(self, request: Request) -> tuple[Any, Response | None]:
        """Record the request; the body, and a 401 answer unless it carries the workspace's API key."""
        body = await request.json() if await request.body() else None
        self.requests.append(
            RecordedRequest(request.method, request.url.path, body, request.headers.get("authorization"))
        )
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return body, JSONResponse({"detail": "Invalid authentication credentials"}, status_code=401)
        return body, None

    async def _filter(self, request: Request) -> Response:
        _, refused = await self._receive(request)
        return refused or JSONResponse(list(self.webhooks.values()))

    async def _create(self, request: Request) -> Response:
        body, refused = await self._receive(request)
        return refused or JSONResponse(
            self.add(**{key: body[key] for key in _FIELDS if key in body}), status_code=201
        )

    async def _one(self, request: Request) -> Response:
        body, refused = await self._receive(request)
        if refused:
            return refused
        webhook = self.webhooks.get(request.path_params["webhook_id"])
        if webhook is None:
            return JSONResponse({"detail": "Webhook not found"}, status_code=404)
        if request.method == "GET":
            return JSONResponse(webhook)
        # A PUT replaces the whole webhook: a field the client leaves out is reset.
        webhook.update({key: body.get(key) for key in _FIELDS}, updated=datetime.now(UTC).isoformat())
        return Response(status_code=204)
