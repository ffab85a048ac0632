"""Per-webhook authentication: bearer tokens and Standard Webhooks signatures (signed here by hand)."""

import base64
import hashlib
import hmac
import time
from pathlib import Path

import pytest

from webhooks.auth import Unauthorized, verifier_for
from webhooks.catalog import ConfigError, Webhook

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = b'{"totalRecordsSent": 5}'


def webhook(auth: str) -> Webhook:
    return Webhook(
        "summary",
        "",
        Path("summary.json.j2"),
        "{}",
        "summary",
        auth=auth,
        secret_env={"bearer": "SUMMARY_WEBHOOK_TOKEN", "standard-webhooks": "SUMMARY_WEBHOOK_SECRET"}.get(
            auth
        ),
    )


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature, computed straight from the specification."""
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes = KEY, timestamp: int | None = None, body: bytes = BODY) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, "msg_1", timestamp, body),
    }


def test_no_auth_needs_no_verifier():
    assert verifier_for(webhook("none"), {}) is None


def test_the_right_bearer_token_passes_and_any_other_is_refused():
    verifier = verifier_for(webhook("bearer"), {"SUMMARY_WEBHOOK_TOKEN": "t0ken"})
    verifier.verify({"authorization": "Bearer t0ken"}, BODY)
    for headers in (
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic t0ken"},
        {"authorization": "t0ken"},
    ):
        with pytest.raises(Unauthorized, match="Missing or wrong bearer token"):
            verifier.verify(headers, BODY)


def test_a_valid_signature_passes():
    verifier_for(webhook("standard-webhooks"), {"SUMMARY_WEBHOOK_SECRET": SECRET}).verify(
        signed_headers(), BODY
    )


def test_any_of_several_signatures_passes_while_keys_rotate():
    headers = signed_headers()
    headers["webhook-signature"] = f"v1,{base64.b64encode(b'old').decode()} {headers['webhook-signature']}"
    verifier_for(webhook("standard-webhooks"), {"SUMMARY_WEBHOOK_SECRET": SECRET}).verify(headers, BODY)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h: h.update(
            {"webhook-signature": sign(b"another key", "msg_1", int(h["webhook-timestamp"]), BODY)}
        ),
        lambda h: h.update({"webhook-id": "msg_2"}),
        lambda h: h.update({"webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}),
        lambda h: h.update({"webhook-signature": "garbage"}),
        lambda h: h.update({"webhook-timestamp": "yesterday"}),
        lambda h: h.pop("webhook-signature"),
        lambda h: h.pop("webhook-id"),
    ],
    ids=["other-key", "other-id", "other-version", "garbage", "bad-timestamp", "no-signature", "no-id"],
)
def test_a_wrong_or_malformed_signature_is_refused_with_one_answer(tamper):
    headers = signed_headers()
    tamper(headers)
    with pytest.raises(Unauthorized, match=r"^Invalid signature$"):
        verifier_for(webhook("standard-webhooks"), {"SUMMARY_WEBHOOK_SECRET": SECRET}).verify(headers, BODY)


def test_a_changed_body_breaks_the_signature():
    with pytest.raises(Unauthorized):
        verifier_for(webhook("standard-webhooks"), {"SUMMARY_WEBHOOK_SECRET": SECRET}).verify(
            signed_headers(), BODY + b" "
        )


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_more_than_five_minutes_off_is_refused(skew):
    verifier = verifier_for(webhook("standard-webhooks"), {"SUMMARY_WEBHOOK_SECRET": SECRET})
    now = time.time()
    verifier.verify(signed_headers(timestamp=int(now) + 299), BODY, now=now)
    with pytest.raises(Unauthorized):
        verifier.verify(signed_headers(timestamp=int(now) + skew), BODY, now=now)


def test_a_missing_secret_names_the_variable_to_set():
    with pytest.raises(ConfigError, match="requires bearer auth but SUMMARY_WEBHOOK_TOKEN is not set"):
        verifier_for(webhook("bearer"), {})


def test_a_secret_that_is_not_base64_is_refused_at_start():
    with pytest.raises(ConfigError, match="SUMMARY_WEBHOOK_SECRET must be a Standard Webhooks secret"):
        verifier_for(webhook("standard-webhooks"), {"SUMMARY_WEBHOOK_SECRET": "whsec_not base64!"})
