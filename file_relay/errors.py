"""Every error file_relay raises: each says which file, setting or record is wrong and what to do next."""

from __future__ import annotations

from configuration.declared import SettingsError

__all__ = [
    "BlobSuperseded",
    "DeliveryError",
    "EmissionError",
    "MissingTrackingId",
    "RecordError",
    "SettingsError",
    "WorkItemError",
]


class DeliveryError(RuntimeError):
    """A webhook did not accept a request; the function fails so the host retries it."""


class MissingTrackingId(ValueError):
    """A blob arrived without the metadata that correlates it; it was announced but is not emitted."""


class EmissionError(RuntimeError):
    """A file whose records cannot all be sent; it ends in the emit queue's poison queue."""


class BlobSuperseded(Exception):
    """The blob version named in the work item was overwritten or deleted since it was queued."""


class RecordError(ValueError):
    """A record that cannot be sent; the message says which line or record and why."""


class WorkItemError(ValueError):
    """A message on the emit queue that is not a work item; it ends in the poison queue."""
