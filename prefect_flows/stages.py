"""The four stages a file passes after its kickoff, and which event proves each one."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from prefect.events.schemas.events import Event


@dataclass(frozen=True)
class Stage:
    """One step of a file's journey: the event that proves it and how long it may take."""

    event: str
    deadline_parameter: str
    default_deadline_seconds: float
    count_label: str | None = None


# Defaults for a nightly batch pipeline: the mainframe job may take an hour to ship the file,
# the consumer a few more to drain the records queue.
TRANSFER = Stage("transfer", "transfer_deadline_seconds", 3600)
BLOB_CREATED = Stage("Microsoft.Storage.BlobCreated", "blob_created_deadline_seconds", 5400)
SUMMARY = Stage("Summary", "summary_deadline_seconds", 7200, count_label="totalRecordsSent")
RECONCILIATION = Stage(
    "Reconciliation", "reconciliation_deadline_seconds", 10800, count_label="totalRecordsReceived"
)
STAGES = (TRANSFER, BLOB_CREATED, SUMMARY, RECONCILIATION)
STAGE_EVENTS = [stage.event for stage in STAGES]


@dataclass(frozen=True)
class TrackedFile:
    """The file a run follows: its name and the trackingId every stage event carries."""

    file_name: str
    tracking_id: str

    def problems(self) -> list[str]:
        """What makes this kickoff impossible to follow (empty when it is fine)."""
        missing = [
            label
            for label, value in (("file_name", self.file_name), ("trackingId", self.tracking_id))
            if not value.strip()
        ]
        return [f"the kickoff event has no {label} label (or it is empty)" for label in missing]

    def proves(self, stage: Stage, event: Event) -> bool:
        """Whether `event` is this file's event for `stage`."""
        if event.event != stage.event:
            return False
        tracking_id = event.resource.get("trackingId")
        if stage == BLOB_CREATED:
            # Event Grid knows blobs, not trackingIds: match the blob's name, and the trackingId
            # too when a sender added one.
            url = event.resource.get("url") or event.resource.id
            return self._names_this_file(url) and tracking_id in (None, "", self.tracking_id)
        return tracking_id == self.tracking_id

    def concerns(self, event: Event) -> bool:
        """Whether `event` proves any stage of this file."""
        return any(self.proves(stage, event) for stage in STAGES)

    def _names_this_file(self, url: str) -> bool:
        path = blob_url_path(url)
        return path.endswith("/" + self.file_name.lstrip("/"))


def last_part(path: str) -> str:
    """What a file is found by in a dictionary: `2024/06/a.csv` -> `a.csv`."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def blob_url_path(url: str) -> str:
    """A blob URL's path as the file name reads: `.../incoming/a%20b.csv` -> `/.../incoming/a b.csv`."""
    return unquote(urlsplit(url).path)
