"""The webhook gateway: Prefect Cloud's webhooks for a self-hosted Prefect server, as an ASGI app.

`/hooks/<slug>` renders the webhook's template into events, queues them durably and answers
204; the forwarder takes them to Prefect. Beyond Prefect Cloud: Event Grid's subscription
validation and the CloudEvents `OPTIONS` handshake are answered, array bodies can be split
into one event per element, requests can be authenticated, and redeliveries make no duplicates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhooks.auth import Unauthorized, Verifier, verifier_for
from webhooks.catalog import Webhook
from webhooks.forwarder import Forwarder
from webhooks.outbox import Outbox, OutboxError
from webhooks.rendering import EventRenderer

logger = logging.getLogger("webhooks.gateway")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


class BodyTooLarge(Exception):
    """The request body is over the gateway's limit."""


class WebhookGateway:
    """Serves each webhook at `/hooks/<slug>` and reports its own state at `/health`."""

    def __init__(
        self,
        webhooks: list[Webhook],
        outbox: Outbox,
        forwarder: Forwarder,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        drain_seconds: float = 5.0,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.hooks: dict[str, tuple[EventRenderer, Verifier | None]] = {
            webhook.slug: (EventRenderer(webhook), verifier_for(webhook, environ)) for webhook in webhooks
        }
        self.outbox = outbox
        self.forwarder = forwarder
        self.max_body_bytes = max_body_bytes
        self.drain_seconds = drain_seconds
        self.app = Starlette(
            routes=[Route("/hooks/{slug}", self.receive, methods=METHODS), Route("/health", self.health)],
            lifespan=self._lifespan,
        )

    async def receive(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        if slug not in self.hooks:
            served = ", ".join(f"/hooks/{name}" for name in self.hooks)
            return _error(404, f"no webhook at /hooks/{slug}; this gateway serves {served}")
        renderer, verifier = self.hooks[slug]
        if request.method == "OPTIONS":
            return _abuse_protection(request)
        try:
            raw = await self._read_body(request)
        except BodyTooLarge:
            return _error(413, f"the body is larger than the gateway's limit of {self.max_body_bytes} bytes")
        if request.headers.get("aeg-event-type") == "SubscriptionValidation":
            return _subscription_validation(slug, raw)
        if verifier is not None:
            try:
                verifier.verify(request.headers, raw)
            except Unauthorized as error:
                challenge = {"WWW-Authenticate": "Bearer"} if verifier.scheme == "bearer" else {}
                return _error(401, str(error), challenge)
        result = renderer.interpret(request.method, request.headers.items(), raw)
        try:
            await self.outbox.put(result.events + result.failures)
        except OutboxError as error:
            logger.error("%s", error)
            return _error(503, "the gateway cannot queue events right now; retry later", {"Retry-After": "5"})
        if result.failures:
            return _error(400, "; ".join(result.errors))
        return Response(status_code=204)

    async def health(self, request: Request) -> Response:
        stats = await self.outbox.stats()
        forwarder = self.forwarder
        return JSONResponse(
            {
                "queued": stats.queued,
                "oldest_queued_seconds": stats.oldest_queued_seconds,
                "rejected": stats.rejected,
                "delivered": forwarder.delivered,
                "prefect_api_url": forwarder.api_url,
                "prefect_reachable": await forwarder.prefect_reachable(),
                "last_forward_error": forwarder.last_error,
                "last_forward_error_at": _iso(forwarder.last_error_at),
                "forward_rate": forwarder.pacer.rate,
                "max_events_per_second": forwarder.pacer.ceiling,
                "webhooks": sorted(self.hooks),
            }
        )

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        stats = await self.outbox.open()
        if stats.queued:
            logger.info("%d events queued from before; forwarding them first", stats.queued)
        self.forwarder.start()
        yield
        await self.forwarder.stop(self.drain_seconds)
        stats = await self.outbox.stats()
        if stats.queued:
            logger.warning("%d events stay queued in %s for the next start", stats.queued, self.outbox.path)
        await self.outbox.close()


def _subscription_validation(slug: str, raw: bytes) -> Response:
    """Event Grid proves a new subscription by asking for its validation code back."""
    try:
        (event,) = orjson.loads(raw)
        if event["eventType"] != VALIDATION_EVENT:
            raise ValueError(event["eventType"])
        code = event["data"]["validationCode"]
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError):
        return _error(400, f"aeg-event-type is SubscriptionValidation but the body is not one {VALIDATION_EVENT}")
    logger.info("answered Event Grid's subscription validation for /hooks/%s", slug)
    return JSONResponse({"validationResponse": code})


def _abuse_protection(request: Request) -> Response:
    """CloudEvents webhook handshake: consent to deliveries from the requesting origin, at any rate."""
    headers = {"Allow": ", ".join(METHODS)}
    origin = request.headers.get("webhook-request-origin")
    if origin:
        headers |= {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
    return Response(status_code=200, headers=headers)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
