"""The gateway's answers, in process: its Starlette app over httpx.ASGITransport, a real outbox on disk.

Every branch of the request path in milliseconds; tests/test_gateway.py holds the same gateway
as a process, forwarding to a real Prefect server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from webhooks.catalog import Webhook, load_catalog
from webhooks.forwarder import Forwarder
from webhooks.gateway import WebhookGateway
from webhooks.outbox import Outbox

pytestmark = pytest.mark.anyio

SUMMARY = {"totalRecordsSent": "3", "trackingId": "T-1"}
TOKEN = "lab-token"
LAB = Webhook(
    name="lab",
    description="",
    template_path=Path("lab.json.j2"),
    template='{"event": "lab", "resource": {"prefect.resource.id": "lab.{{ body.id }}"}}',
    slug="lab",
    auth="bearer",
    secret_env="LAB_TOKEN",
)


class InProcessGateway:
    """A WebhookGateway and a client that reaches its app without a socket."""

    def __init__(self, tmp_path: Path, max_queued_bytes: int, **options) -> None:
        self.outbox = Outbox(tmp_path / "outbox.sqlite3", max_queued_bytes)
        # Never started: the events stay queued, where these tests look for them.
        self.forwarder = Forwarder(self.outbox, "http://127.0.0.1:9/api", 100, 10)
        webhooks = [*load_catalog(), LAB]
        self.gateway = WebhookGateway(
            webhooks, self.outbox, self.forwarder, environ={"LAB_TOKEN": TOKEN}, **options
        )
        transport = httpx.ASGITransport(app=self.gateway.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://gateway")

    async def queued(self) -> int:
        return (await self.outbox.stats()).queued


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[InProcessGateway]:
    """The gateway in this process: 1 KiB bodies at most, a 0.3 s body timeout, a 4 KiB queue."""
    gateway = InProcessGateway(tmp_path, max_queued_bytes=4096, max_body_bytes=1024, body_seconds=0.3)
    await gateway.outbox.open()
    yield gateway
    await gateway.client.aclose()
    await gateway.forwarder.stop(0)
    await gateway.outbox.close()


async def test_a_webhook_request_is_queued_and_answered_204(app):
    response = await app.client.post("/hooks/summary", json=SUMMARY)

    assert response.status_code == 204
    assert await app.queued() == 1


async def test_an_unknown_webhook_is_404_naming_the_path(app):
    response = await app.client.post("/hooks/nowhere", json=SUMMARY)

    assert response.status_code == 404
    assert response.json() == {"error": "no webhook at /hooks/nowhere"}


async def test_get_on_a_webhook_that_takes_no_get_is_405_with_the_methods_it_takes(app):
    response = await app.client.get("/hooks/summary")

    assert response.status_code == 405
    assert "GET" not in response.headers["allow"]
    assert "POST" in response.headers["allow"]
    assert await app.queued() == 0


async def test_a_body_over_the_limit_is_413_and_nothing_is_queued(app):
    response = await app.client.post("/hooks/summary", content=b"x" * 1025)

    assert response.status_code == 413
    assert "1024 bytes" in response.json()["error"]
    assert await app.queued() == 0


async def test_a_body_that_stalls_is_408_and_the_connection_is_closed(app):
    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"totalRecordsSent": '
        await anyio.sleep(2)
        yield b'"3"}'

    response = await app.client.post("/hooks/summary", content=stalled())

    assert response.status_code == 408
    assert response.headers["connection"] == "close"
    assert await app.queued() == 0


async def test_a_protected_webhook_without_its_token_is_401_with_a_challenge(app):
    response = await app.client.post("/hooks/lab", json={"id": "1"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert await app.queued() == 0


async def test_a_protected_webhook_with_its_token_is_accepted(app):
    response = await app.client.post(
        "/hooks/lab", json={"id": "1"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert response.status_code == 204
    assert await app.queued() == 1


async def test_json_that_does_not_parse_is_400_and_queued_as_a_failure_event(app):
    response = await app.client.post(
        "/hooks/summary", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    assert await app.queued() == 1  # prefect-cloud.webhook.failed, as Prefect Cloud makes it


async def test_an_idempotency_key_reused_for_another_body_is_422_and_nothing_more_is_queued(app):
    headers = {"Idempotency-Key": "K-1"}
    first = await app.client.post("/hooks/summary", json=SUMMARY, headers=headers)
    again = await app.client.post(
        "/hooks/summary", json={**SUMMARY, "totalRecordsSent": "4"}, headers=headers
    )

    assert first.status_code == 204
    assert again.status_code == 422
    assert await app.queued() == 1


async def test_a_full_queue_is_503_with_retry_after(app):
    statuses = []
    for number in range(20):
        response = await app.client.post("/hooks/summary", json={**SUMMARY, "trackingId": f"T-{number}"})
        statuses.append(response.status_code)
        if response.status_code == 503:
            break

    assert statuses[-1] == 503, statuses
    assert set(statuses[:-1]) == {204}
    assert response.headers["retry-after"] == "30"
    assert "queue is full" in response.json()["error"]


async def test_event_grids_subscription_validation_is_answered_with_its_code(app):
    validation = [
        {
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {"validationCode": "CODE-1"},
        }
    ]
    response = await app.client.post(
        "/hooks/azure-storage", json=validation, headers={"aeg-event-type": "SubscriptionValidation"}
    )

    assert response.status_code == 200
    assert response.json() == {"validationResponse": "CODE-1"}
    assert await app.queued() == 0


async def test_a_malformed_subscription_validation_is_400(app):
    response = await app.client.post(
        "/hooks/azure-storage", content=b"[]", headers={"aeg-event-type": "SubscriptionValidation"}
    )

    assert response.status_code == 400


async def test_health_shows_the_queue_to_a_loopback_client(app):
    await app.client.post("/hooks/summary", json=SUMMARY)

    health = (await app.client.get("/health")).json()

    assert health["status"] == "ok"
    assert health["queued"] == 1
    assert health["max_queued_bytes"] == 4096
    assert "lab" in health["webhooks"]


async def test_health_shows_only_ok_to_a_client_beyond_loopback(tmp_path):
    gateway = InProcessGateway(tmp_path, max_queued_bytes=4096)
    await gateway.outbox.open()
    remote = httpx.ASGITransport(app=gateway.gateway.app, client=("203.0.113.7", 50000))
    try:
        async with httpx.AsyncClient(transport=remote, base_url="http://gateway") as client:
            response = await client.get("/health")
    finally:
        await gateway.client.aclose()
        await gateway.forwarder.stop(0)
        await gateway.outbox.close()

    assert json.loads(response.text) == {"status": "ok"}
