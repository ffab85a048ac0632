"""Webhook delivery against a real HTTP receiver: retries, Retry-After, tokens and signatures."""

from __future__ import annotations

import base64
import json
from email.utils import formatdate

import pytest

from devstack.supervision.processes import free_port
from file_relay.delivery import (
    DeliveryError,
    RetryPolicy,
    WebhookEndpoint,
    WebhookSender,
    _retry_after,
    idempotency_key,
)
from tests.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"a shared key of some length").decode()
FAST = RetryPolicy(attempts=4, backoff=0.01, max_delay=1.0)


def webhook(url: str, token: str = "", secret: str = "") -> WebhookEndpoint:
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret else b""
    return WebhookEndpoint("summary", url, token, key)


def test_backoff_doubles_up_to_the_cap_and_a_longer_retry_after_wins():
    policy = RetryPolicy(attempts=6, backoff=1.0, max_delay=30.0)

    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]
    assert policy.delay(1, retry_after=7) == 7


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    assert _retry_after("3") == 3.0
    assert 55 < _retry_after(formatdate(timeval=__import__("time").time() + 60, usegmt=True)) <= 60
    assert _retry_after("soon") is None and _retry_after(None) is None


def test_the_idempotency_key_is_stable_per_blob_version_and_event_and_differs_across_blobs():
    key = idempotency_key("0x8D1", "summary", "incoming/a.csv")

    assert key == idempotency_key("0x8D1", "summary", "incoming/a.csv")
    assert key.startswith("0x8D1:summary:")
    assert key != idempotency_key("0x8D1", "summary", "incoming/b.csv")
    assert key != idempotency_key("0x8D1", "blob-created", "incoming/a.csv")


def test_a_body_is_posted_as_compact_json_with_its_idempotency_key(receiver):
    WebhookSender(FAST, timeout=5).post(webhook(receiver.url("/s")), {"totalRecordsSent": 3}, "K-1")

    [request] = receiver.to("/s")
    assert request.body == b'{"totalRecordsSent":3}'
    assert request.headers["idempotency-key"] == "K-1"
    assert "authorization" not in request.headers and "webhook-signature" not in request.headers


def test_retry_after_longer_than_the_cap_fails_at_once_so_the_host_retries_later(receiver):
    receiver.fail_next(1, 503, retry_after="120")

    with pytest.raises(DeliveryError, match="asked to retry after 120 s"):
        WebhookSender(FAST, timeout=5).post(webhook(receiver.url("/s")), {}, "K-2")

    assert len(receiver.to("/s")) == 1


def test_a_refusal_other_than_429_is_not_retried_and_names_the_settings_to_check(receiver):
    receiver.fail_next(1, 404)

    with pytest.raises(
        DeliveryError, match=r"refused the request: HTTP 404.*SUMMARY_WEBHOOK_TOKEN / SUMMARY_WEBHOOK_SECRET"
    ):
        WebhookSender(FAST, timeout=5).post(webhook(receiver.url("/s")), {}, "K-3")

    assert len(receiver.to("/s")) == 1


def test_the_error_never_shows_the_webhook_path_which_may_be_a_capability():
    url = f"http://127.0.0.1:{free_port()}/hooks/secret-slug-123"

    with pytest.raises(DeliveryError) as raised:
        WebhookSender(RetryPolicy(attempts=1), timeout=1).post(webhook(url), {}, "K-4")

    assert "secret-slug-123" not in str(raised.value)
    assert "SUMMARY_WEBHOOK_URL" in str(raised.value)


def test_a_bearer_token_is_sent_when_configured():
    receiver = WebhookReceiver(token="t0ken").start()
    try:
        sender = WebhookSender(FAST, timeout=5)
        sender.post(webhook(receiver.url("/s"), token="t0ken"), {}, "K-5")
        with pytest.raises(DeliveryError, match="HTTP 401"):
            sender.post(webhook(receiver.url("/s"), token="wrong"), {}, "K-6")
    finally:
        receiver.stop()

    assert [r.status for r in receiver.to("/s")] == [204, 401]


def test_signed_requests_verify_with_the_standard_webhooks_reference_library():
    receiver = WebhookReceiver(secret=SECRET).start()
    try:
        sender = WebhookSender(FAST, timeout=5)
        sender.post(webhook(receiver.url("/s"), secret=SECRET), {"n": 1}, "K-7")
        other = "whsec_" + base64.b64encode(b"another key").decode()
        with pytest.raises(DeliveryError, match=r"HTTP 401.*SUMMARY_WEBHOOK_SECRET"):
            sender.post(webhook(receiver.url("/s"), secret=other), {"n": 1}, "K-8")
    finally:
        receiver.stop()

    accepted, refused = receiver.to("/s")
    assert accepted.status == 204 and refused.status == 401
    assert accepted.headers["webhook-id"] == accepted.headers["idempotency-key"] == "K-7"
    assert json.loads(accepted.body) == {"n": 1}
