"""Webhook delivery: a JSON POST with an idempotency key, signed or with a bearer token, retried by policy."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from configuration.declared import webhook_variable
from file_relay.errors import DeliveryError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where a sender posts one webhook (`name` as in the contracts: `summary`), and how it proves itself."""

    name: str
    url: str
    token: str = ""
    secret: bytes = b""

    @property
    def where(self) -> str:
        """The URL without its path, which may be a capability (Prefect Cloud's webhook ids are)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}/… ({self.variable('URL')})"

    def variable(self, part: str) -> str:
        """The setting that holds this webhook's `part` (`URL`, `TOKEN`, `SECRET`)."""
        return webhook_variable(self.name, part)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: exponential backoff, `Retry-After` honoured up to `max_delay`."""

    attempts: int = 5
    backoff: float = 1.0
    max_delay: float = 30.0

    def delay(self, failed_attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after attempt number `failed_attempt` (1-based) failed."""
        backoff = min(self.backoff * 2 ** (failed_attempt - 1), self.max_delay)
        return max(backoff, retry_after or 0.0)


def idempotency_key(etag: str, event: str, blob_path: str) -> str:
    """The same key for every delivery of one event about one blob version (`<etag>:<event>:<path digest>`).

    ETags are unique per blob, not per account (Azurite draws them from the clock and a small random
    factor), so a short digest of the blob's path keeps two files from ever sharing a key.
    """
    digest = hashlib.sha256(blob_path.encode()).hexdigest()[:16]
    return f"{etag}:{event}:{digest}"


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """A Standard Webhooks `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`."""
    digest = hmac.new(secret, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookSender:
    """Posts JSON bodies to webhooks, retrying connection errors, 5xx and 429 as `retry` says."""

    def __init__(self, retry: RetryPolicy, timeout: float) -> None:
        self.retry = retry
        self.timeout = timeout

    def post(self, webhook: WebhookEndpoint, body: object, key: str) -> None:
        """Deliver `body` once (as far as the receiver de-duplicates by `key`), or raise DeliveryError."""
        content = json.dumps(body, separators=(",", ":")).encode()
        failure = ""
        with httpx.Client(timeout=self.timeout) as client:
            for attempt in range(1, self.retry.attempts + 1):
                retry_after = None
                try:
                    response = client.post(
                        webhook.url, content=content, headers=self._headers(webhook, key, content)
                    )
                except httpx.TransportError as error:
                    failure = f"{type(error).__name__}: {error}"
                else:
                    if response.is_success:
                        return
                    failure = f"HTTP {response.status_code} {response.reason_phrase}"
                    if not _retryable(response.status_code):
                        raise DeliveryError(
                            f"the {webhook.name} webhook at {webhook.where} refused the request: {failure}; "
                            f"{response.text[:200]!r}. Not retried: check the URL and "
                            f"{webhook.variable('TOKEN')} / {webhook.variable('SECRET')}."
                        )
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                if attempt == self.retry.attempts:
                    break
                wait = self.retry.delay(attempt, retry_after)
                if wait > self.retry.max_delay:
                    failure += f"; it asked to retry after {wait:g} s, longer than this call waits"
                    break
                logger.warning(
                    "%s webhook attempt %d/%d failed (%s); retrying in %.2g s",
                    webhook.name,
                    attempt,
                    self.retry.attempts,
                    failure,
                    wait,
                )
                time.sleep(wait)
        raise DeliveryError(
            f"the {webhook.name} webhook at {webhook.where} did not accept the request after "
            f"{attempt} attempt(s); last: {failure}. The function fails so the Functions host retries it."
        )

    @staticmethod
    def _headers(webhook: WebhookEndpoint, key: str, content: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if webhook.token:
            headers["Authorization"] = f"Bearer {webhook.token}"
        if webhook.secret:
            timestamp = int(time.time())
            headers["webhook-id"] = key
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(webhook.secret, key, timestamp, content)
        return headers
