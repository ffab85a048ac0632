"""The work item the blob trigger queues for the emitter: which blob version to emit, for which trackingId."""

from __future__ import annotations

import json
from dataclasses import dataclass

from file_relay.errors import WorkItemError

_FIELDS = {"container": str, "blobName": str, "eTag": str, "trackingId": str, "contentLength": int}


def log_fields(path: str, etag: str, tracking_id: str) -> dict[str, str]:
    """A log record's fields for one blob version (`customDimensions` in Application Insights)."""
    return {"file": path, "eTag": etag, "trackingId": tracking_id}


@dataclass(frozen=True)
class WorkItem:
    """One blob version to emit. `etag` is unquoted, as Event Grid and the envelopes show it."""

    container: str
    blob_name: str
    etag: str
    tracking_id: str
    content_length: int

    @property
    def path(self) -> str:
        return f"{self.container}/{self.blob_name}"

    @property
    def log_fields(self) -> dict[str, str]:
        """Fields for `extra=`, so operators filter the functions' logs by file, eTag or trackingId."""
        return log_fields(self.path, self.etag, self.tracking_id)

    def to_json(self) -> str:
        return json.dumps(
            {
                "container": self.container,
                "blobName": self.blob_name,
                "eTag": self.etag,
                "trackingId": self.tracking_id,
                "contentLength": self.content_length,
            }
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> WorkItem:
        """Parse a queue message body; a WorkItemError names what is missing or wrong."""
        try:
            fields = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise WorkItemError(f"the emit queue message is not JSON ({error}): {body[:200]!r}") from None
        if not isinstance(fields, dict):
            raise WorkItemError(f"the emit queue message is not a JSON object: {body[:200]!r}")
        for name, kind in _FIELDS.items():
            value = fields.get(name)
            if not isinstance(value, kind) or isinstance(value, bool) or value in ("", None):
                raise WorkItemError(
                    f"the emit queue message has no valid {name!r} ({kind.__name__}): {body[:200]!r}"
                )
        return cls(
            fields["container"],
            fields["blobName"],
            fields["eTag"],
            fields["trackingId"],
            fields["contentLength"],
        )
