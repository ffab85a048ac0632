"""The webhook gateway: Prefect Cloud's webhooks for a self-hosted Prefect server, as an ASGI app.

`/hooks/<slug>` renders the webhook's template into events, queues them durably and answers
204; the forwarder takes them to Prefect. Beyond Prefect Cloud: Event Grid's subscription
validation and the CloudEvents `OPTIONS` handshake are answered, array bodies can be split
into one event per element, requests can be authenticated, and redeliveries make no duplicates.
`/health` tells anyone that the gateway is up, and the details to loopback or the admin token.
"""

from __future__ import annotations

import asyncio
import ipaddress
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
from webhooks.errors import BodyTooLarge
from webhooks.forwarder import Forwarder
from webhooks.outbox import KeyReused, Outbox, OutboxError, OutboxFull
from webhooks.rendering import HIDDEN_HEADERS, EventRenderer

logger = logging.getLogger("webhooks.gateway")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# A body still arriving after this long is a stalled client, not a slow network.
DEFAULT_BODY_SECONDS = 10.0
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


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
        body_seconds: float = DEFAULT_BODY_SECONDS,
        hidden_headers: frozenset[str] = HIDDEN_HEADERS,
        allowed_origins: frozenset[str] = frozenset(),
        admin_token: str | None = None,
    ) -> None:
        self.hooks: dict[str, tuple[EventRenderer, Verifier | None]] = {
            webhook.slug: (EventRenderer(webhook, hidden_headers), verifier_for(webhook, environ))
            for webhook in webhooks
        }
        self.outbox = outbox
        self.forwarder = forwarder
        self.max_body_bytes = max_body_bytes
        self.drain_seconds = drain_seconds
        self.body_seconds = body_seconds
        self.allowed_origins = allowed_origins
        self.admin = Verifier("bearer", admin_token.encode()) if admin_token else None
        self.app = Starlette(
            routes=[Route("/hooks/{slug}", self.receive, methods=METHODS), Route("/health", self.health)],
            lifespan=self._lifespan,
        )

    async def receive(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        if slug not in self.hooks:
            return _error(404, f"no webhook at /hooks/{slug}")
        renderer, verifier = self.hooks[slug]
        if request.method in ("GET", "HEAD") and not renderer.webhook.accept_get:
            allowed = ", ".join(method for method in METHODS if method not in ("GET", "HEAD"))
            return _error(405, f"/hooks/{slug} takes {allowed}", {"Allow": allowed})
        try:
            raw = await self._read_body(request)
        except BodyTooLarge:
            return _error(413, f"the body is larger than the gateway's limit of {self.max_body_bytes} bytes")
        except TimeoutError:
            # The rest of the body may never come: close the connection rather than wait for it.
            return _error(
                408, f"the body did not arrive within {self.body_seconds:g} s", {"Connection": "close"}
            )
        # Handshakes make no event, but on a protected webhook they too prove who asks.
        handshake = (
            request.method == "OPTIONS" or request.headers.get("aeg-event-type") == "SubscriptionValidation"
        )
        consented = (
            request.method == "OPTIONS"
            and request.headers.get("webhook-request-origin") in self.allowed_origins
        )
        if verifier is not None and not consented:
            try:
                verifier.verify(request.headers, raw)
            except Unauthorized as error:
                challenge = {"WWW-Authenticate": "Bearer"} if verifier.scheme == "bearer" else {}
                return _error(401, str(error), challenge)
        if handshake:
            return (
                _abuse_protection(request)
                if request.method == "OPTIONS"
                else _subscription_validation(slug, raw)
            )
        result = renderer.interpret(request.method, request.headers.items(), raw)
        keys = {event_id: key.key_id for event_id, key in result.keys.items()}
        try:
            reused = await self.outbox.put(
                result.events + result.failures, keys, strict=result.key_from_headers
            )
        except KeyReused:
            return _error(
                422,
                "this request's idempotency key (Idempotency-Key, webhook-id or ce-id) came before with a "
                "different body; nothing was accepted: send a new request with a new key",
            )
        except OutboxFull as error:
            logger.warning("refusing events: %s", error, extra={"webhook": slug})
            return _error(
                503, "the gateway's queue is full: Prefect is behind; retry later", {"Retry-After": "30"}
            )
        except OutboxError as error:
            logger.error("%s", error, extra={"webhook": slug})
            return _error(503, "the gateway cannot queue events right now; retry later", {"Retry-After": "5"})
        for event_id in reused:
            logger.warning(
                "/hooks/%s: %s came before with different content; "
                "queued as a distinct event (%s), not dropped as a redelivery",
                slug,
                result.keys[event_id].name,
                event_id,
                extra={"webhook": slug, "eventId": event_id},
            )
        if result.failures:
            return _error(result.status, "; ".join(result.errors))
        return Response(status_code=204)

    async def health(self, request: Request) -> Response:
        if not self._may_see_details(request):
            return JSONResponse({"status": "ok"})
        stats = await self.outbox.stats()
        forwarder = self.forwarder
        return JSONResponse(
            {
                "status": "ok",
                "queued": stats.queued,
                "queued_bytes": stats.queued_bytes,
                "max_queued_bytes": self.outbox.max_queued_bytes,
                "oldest_queued_seconds": stats.oldest_queued_seconds,
                "rejected": stats.rejected,
                "delivered": forwarder.delivered,
                "prefect_api_url": forwarder.api_url,
                "prefect_reachable": await forwarder.prefect_reachable(),
                "last_forward_error": forwarder.last_error,
                "last_forward_error_at": _iso(forwarder.last_error_at),
                "forwarder_restarts": forwarder.restarts,
                "forward_rate": forwarder.pacer.rate,
                "max_events_per_second": forwarder.pacer.ceiling,
                "webhooks": sorted(self.hooks),
            }
        )

    def _may_see_details(self, request: Request) -> bool:
        """The admin token when one is set (behind a proxy every client is local), else a loopback client."""
        if self.admin is not None:
            try:
                self.admin.verify(request.headers, b"")
            except Unauthorized:
                return False
            return True
        try:
            return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
        except ValueError:
            return False

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        chunks, size = [], 0
        async with asyncio.timeout(self.body_seconds):
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
        return _error(
            400, f"aeg-event-type is SubscriptionValidation but the body is not one {VALIDATION_EVENT}"
        )
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
