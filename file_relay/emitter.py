"""The emitter's work: stream one blob version's records to the records queue, close it, post the Summary.

The blob is read in 4 MiB chunks, split into records and packed into envelopes as it streams,
with a bounded number of envelopes in flight, so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from file_relay.delivery import WebhookSender, idempotency_key
from file_relay.envelopes import MAX_ENVELOPE_BYTES, EnvelopePacker
from file_relay.records import RecordError, RecordSplitter
from file_relay.records_queue import RecordsQueue
from file_relay.settings import RelaySettings
from file_relay.storage import StorageAccount
from file_relay.work_item import WorkItem

logger = logging.getLogger(__name__)

PROGRESS_BYTES = 128 * 1024 * 1024


class EmissionError(RuntimeError):
    """A file whose records cannot all be sent; it ends in the emit queue's poison queue."""


class BlobSuperseded(Exception):
    """The blob version named in the work item was overwritten or deleted since it was queued."""


@dataclass(frozen=True)
class Emission:
    """What one emission sent."""

    work_item: WorkItem
    records: int
    envelopes: int
    seconds: float


def blob_chunks(blob: BlobClient, item: WorkItem) -> Iterator[bytes]:
    """The named blob version's content, chunk by chunk, with a progress line every PROGRESS_BYTES."""
    read = 0
    try:
        # The ETag condition holds for every range request, so a blob changed mid-stream stops it too.
        download = blob.download_blob(etag=f'"{item.etag}"', match_condition=MatchConditions.IfNotModified)
        for chunk in download.chunks():
            read += len(chunk)
            if read // PROGRESS_BYTES != (read - len(chunk)) // PROGRESS_BYTES:
                logger.info("%s: %d of %d MiB read", item.path, read >> 20, item.content_length >> 20)
            yield chunk
    except (ResourceModifiedError, ResourceNotFoundError) as error:
        raise BlobSuperseded(f"{type(error).__name__} after {read} bytes") from error


def emit(body: bytes | str, settings: RelaySettings, sender: WebhookSender | None = None) -> Emission | None:
    """Emit the work item in `body`: every record once, in order, then the final envelope and the Summary.

    Returns None when the blob version was superseded: its newer version has its own announcement
    and work item, and retrying this one could never succeed.
    """
    started = time.monotonic()
    item = WorkItem.from_json(body)
    webhook = settings.webhook("summary")
    sender = sender or WebhookSender(settings.retry, settings.webhook_timeout)
    account = StorageAccount(settings.storage_connection)
    queue = RecordsQueue(
        account.queue(settings.records_queue, settings.send_concurrency), settings.send_concurrency
    )
    queue.ensure_exists()
    packer = EnvelopePacker(
        item.tracking_id,
        item.blob_name,
        item.etag,
        compress=settings.records_compression == "zlib",
        header_lines=int(settings.first_line_is_header),
    )
    splitter = RecordSplitter(settings.first_line_is_header, MAX_ENVELOPE_BYTES)
    blob = account.blob(item.container, item.blob_name)
    try:
        queue.send_all(packer.pack(splitter.split(blob_chunks(blob, item))))
    except BlobSuperseded as superseded:
        logger.warning(
            "%s changed or was deleted since its work item was queued (eTag %s; %s). Nothing more is sent "
            "for that version: %d envelope(s) went out without a final envelope, so consumers discard them. "
            "A newer version is announced and emitted by its own trigger.",
            item.path,
            item.etag,
            superseded,
            packer.envelopes,
        )
        return None
    except RecordError as error:
        raise EmissionError(
            f"{item.path} (eTag {item.etag}, trackingId {item.tracking_id}): {error}. {packer.envelopes} "
            f"envelope(s) were sent, no final envelope and no Summary. Fix the file and upload it again."
        ) from error
    queue.send(packer.final())
    summary = {"totalRecordsSent": packer.records, "trackingId": item.tracking_id, "fileName": item.blob_name}
    sender.post(webhook, summary, idempotency_key(item.etag, "summary", item.path))
    emission = Emission(item, packer.records, packer.envelopes, time.monotonic() - started)
    logger.info(
        "%s: %d records in %d envelopes to queue %s in %.1f s; Summary posted for trackingId %s",
        item.path,
        emission.records,
        emission.envelopes,
        settings.records_queue,
        emission.seconds,
        item.tracking_id,
    )
    return emission
