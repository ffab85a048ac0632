"""Per-webhook authentication: a bearer token, or a Standard Webhooks signature.

Standard Webhooks (https://www.standardwebhooks.com): the sender signs `id.timestamp.body` with
HMAC-SHA256 under the `whsec_` secret and sends `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64>` (several, space-separated, while keys rotate).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from webhooks.catalog import ConfigError, Webhook
from webhooks.errors import Unauthorized

# Standard Webhooks' tolerance for the sender's clock and for replays.
TIMESTAMP_TOLERANCE_SECONDS = 5 * 60


@dataclass(frozen=True)
class Verifier:
    """Checks one webhook's requests against its token or signing key."""

    scheme: str
    key: bytes

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
        """Return if the request is authentic, else raise Unauthorized with a short reason."""
        if self.scheme == "bearer":
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                raise Unauthorized("Missing or wrong bearer token")
            return
        # Every malformed or wrong part gets the same answer: nothing to learn from the difference.
        try:
            message_id = headers["webhook-id"]
            timestamp = int(headers["webhook-timestamp"])
            signatures = headers["webhook-signature"].split()
        except (KeyError, ValueError):
            raise Unauthorized("Invalid signature") from None
        if abs((time.time() if now is None else now) - timestamp) > TIMESTAMP_TOLERANCE_SECONDS:
            raise Unauthorized("Invalid signature")
        signed = f"{message_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest())
        for signature in signatures:
            version, _, value = signature.partition(",")
            if version == "v1" and hmac.compare_digest(value.encode(), expected):
                return
        raise Unauthorized("Invalid signature")


def verifier_for(webhook: Webhook, environ: Mapping[str, str] = os.environ) -> Verifier | None:
    """The webhook's verifier, or None without auth; ConfigError names a missing or bad secret."""
    secret = webhook.secret(environ)
    if secret is None:
        return None
    if webhook.auth == "bearer":
        return Verifier("bearer", secret.encode())
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        key = b""
    if not key:
        raise ConfigError(
            f"{webhook.secret_env} must be a Standard Webhooks secret: whsec_ followed by base64"
        )
    return Verifier("standard-webhooks", key)
