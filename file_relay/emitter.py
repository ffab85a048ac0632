"""The emitter's work: stream one blob version's records to the records queue, close it, post the Summary.

Three stages overlap, each bounded so memory stays flat whatever the file's size: a thread
downloads the next 4 MiB chunks (READ_AHEAD of them), this thread splits, packs and compresses
(zlib lets the others run meanwhile), and SEND_CONCURRENCY threads send the message bodies.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from file_relay.delivery import WebhookSender, idempotency_key
from file_relay.envelopes import MAX_ENVELOPE_BYTES, EnvelopePacker
from file_relay.errors import BlobSuperseded, EmissionError, RecordError
from file_relay.records import RecordSplitter
from file_relay.records_queue import RecordsQueue
from file_relay.settings import RelaySettings
from file_relay.storage import StorageAccount
from file_relay.work_item import WorkItem

logger = logging.getLogger(__name__)

PROGRESS_BYTES = 128 * 1024 * 1024
READ_AHEAD = 2
T = TypeVar("T")
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


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
                logger.info(
                    "%s: %d of %d MiB read",
                    item.path,
                    read >> 20,
                    item.content_length >> 20,
                    extra=item.log_fields,
                )
            yield chunk
    except (ResourceModifiedError, ResourceNotFoundError) as error:
        raise BlobSuperseded(f"{type(error).__name__} after {read} bytes") from error


def read_ahead(items: Iterable[T], depth: int) -> Generator[T, None, None]:
    """`items`, fetched by a thread of their own up to `depth` ahead of the consumer."""
    iterator, done = iter(items), object()
    pool = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
    try:
        # One thread runs the `next` calls in order; their results wait in `ahead` until consumed.
        ahead = deque(pool.submit(next, iterator, done) for _ in range(depth))
        while (item := ahead.popleft().result()) is not done:
            ahead.append(pool.submit(next, iterator, done))
            yield cast(T, item)
    finally:
        pool.shutdown(cancel_futures=True)


def keep_freed_buffers() -> None:
    """Let glibc reuse the chunk-sized buffers the emitter frees instead of handing them back to the OS.

    By default every few-MiB buffer is unmapped when freed and its pages faulted in again for the
    next chunk, which cost about as much CPU as splitting and escaping the records themselves
    (bench/bench_emitter.py). Does nothing where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    mallopt(_M_TRIM_THRESHOLD, 64 * 1024 * 1024)


def emit(body: bytes | str, settings: RelaySettings, sender: WebhookSender | None = None) -> Emission | None:
    """Emit the work item in `body`: every record once, in order, then the final envelope and the Summary.

    Returns None when the blob version was superseded: its newer version has its own announcement
    and work item, and retrying this one could never succeed.
    """
    started = time.monotonic()
    keep_freed_buffers()
    item = WorkItem.from_json(body)
    # Names the file in the invocation's telemetry, so a failed emission can be found by trackingId.
    logger.info(
        "%s: emitting eTag %s for trackingId %s",
        item.path,
        item.etag,
        item.tracking_id,
        extra=item.log_fields,
    )
    webhook = settings.webhook("summary")
    sender = sender or WebhookSender(settings.retry, settings.webhook_timeout_seconds)
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
    chunks = read_ahead(blob_chunks(account.blob(item.container, item.blob_name), item), READ_AHEAD)
    try:
        queue.send_all(packer.pack(splitter.split(chunks)))
    except BlobSuperseded as superseded:
        logger.warning(
            "%s changed or was deleted since its work item was queued (eTag %s; %s). Nothing more is sent "
            "for that version: %d envelope(s) went out without a final envelope, so consumers discard them. "
            "A newer version is announced and emitted by its own trigger.",
            item.path,
            item.etag,
            superseded,
            packer.envelopes,
            extra=item.log_fields,
        )
        return None
    except RecordError as error:
        raise EmissionError(
            f"{item.path} (eTag {item.etag}, trackingId {item.tracking_id}): {error}. {packer.envelopes} "
            f"envelope(s) were sent, no final envelope and no Summary. Fix the file and upload it again."
        ) from error
    finally:
        chunks.close()  # stops the download thread whatever ended the sending
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
        extra=item.log_fields,
    )
    return emission
