"""Every error the webhooks package raises: each message says what is wrong and what to do next."""

from __future__ import annotations


class ConfigError(ValueError):
    """The webhooks config file cannot be used as written."""


class Unauthorized(Exception):
    """The request does not prove it comes from the configured sender."""


class ForwardError(Exception):
    """Prefect did not take a batch this time; it stays queued and is sent again."""


class BodyTooLarge(Exception):
    """The request body is over the gateway's limit."""


class EventTooLarge(ValueError):
    """A rendered event larger than Prefect publishes."""


class OutboxError(RuntimeError):
    """The outbox could not store events durably (disk full, file unwritable...)."""


class OutboxFull(OutboxError):
    """The queue holds as many bytes as it may: Prefect is behind or away."""


class KeyReused(ValueError):
    """A request's idempotency key came before with another body; nothing of the request was queued."""


class QueueBoundElsewhere(ValueError):
    """The queue holds events for another Prefect API."""


class ProvisioningError(RuntimeError):
    """Prefect Cloud could not be brought in line with the webhooks config."""


class QueueInUse(RuntimeError):
    """Another gateway holds the queue."""


class MalformedBody(ValueError):
    """A body declared as JSON that is not JSON (or is nested too deep to be used)."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text
