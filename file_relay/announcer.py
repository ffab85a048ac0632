"""The blob trigger's work: announce the file as an Event Grid BlobCreated delivery and queue its emission.

It reads the blob's properties and metadata only, never its content, so a file is announced the
moment it lands, whatever its size.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from azure.storage.blob import BlobClient, BlobProperties

from file_relay.delivery import WebhookSender, idempotency_key
from file_relay.errors import MissingTrackingId
from file_relay.settings import RelaySettings
from file_relay.work_item import WorkItem, log_fields

EVENT_TYPE = "Microsoft.Storage.BlobCreated"

logger = logging.getLogger(__name__)


def unquoted(etag: str) -> str:
    """An ETag as Event Grid shows it: `0x8D...`, without the HTTP quotes the SDK keeps."""
    return etag.strip('"')


def _event_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def blob_created_delivery(blob: BlobClient, properties: BlobProperties, topic: str) -> list[dict]:
    """The one-element array Event Grid posts for a created blob, built from the blob's real properties.

    Identifiers Event Grid would draw at random (event id, request ids, batch id) are derived from
    the blob URL and ETag, so announcing the same blob version twice posts the same body.
    """
    etag = unquoted(properties.etag)
    seed = f"{blob.url}|{etag}"

    def derived(kind: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}|{kind}"))

    return [
        {
            "topic": topic or f"/providers/Microsoft.Storage/storageAccounts/{blob.account_name}",
            "subject": f"/blobServices/default/containers/{blob.container_name}/blobs/{blob.blob_name}",
            "eventType": EVENT_TYPE,
            "eventTime": _event_time(properties.last_modified),
            "id": derived("event"),
            "data": {
                "api": "PutBlob",
                "clientRequestId": derived("client-request"),
                "requestId": derived("request"),
                "eTag": etag,
                "contentType": properties.content_settings.content_type or "application/octet-stream",
                "contentLength": properties.size,
                "blobType": properties.blob_type.value if properties.blob_type else "BlockBlob",
                "url": blob.url,
                # Event Grid's per-blob ordering key; the last-modified time in 100 ns ticks orders versions.
                "sequencer": f"{int(properties.last_modified.timestamp() * 10**7):032X}",
                "storageDiagnostics": {"batchId": derived("batch")},
            },
            "dataVersion": "",
            "metadataVersion": "1",
        }
    ]


def announce(blob: BlobClient, settings: RelaySettings, sender: WebhookSender | None = None) -> str:
    """Post the BlobCreated delivery, then return the emitter's work item as JSON.

    The event is posted even when the trackingId metadata is missing, so the arrival is visible;
    then MissingTrackingId is raised and no work item is queued.
    """
    webhook = settings.webhook("azure-storage")
    sender = sender or WebhookSender(settings.retry, settings.webhook_timeout_seconds)
    properties = blob.get_blob_properties()
    path = f"{blob.container_name}/{blob.blob_name}"
    etag = unquoted(properties.etag)
    metadata = {key.lower(): value for key, value in (properties.metadata or {}).items()}
    tracking_id = metadata.get(settings.tracking_id_metadata_key.lower(), "").strip()
    # Names the file in the invocation's telemetry, so a failed announcement can be found by trackingId.
    logger.info(
        "%s: announcing eTag %s for trackingId %s",
        path,
        etag,
        tracking_id or "(none)",
        extra=log_fields(path, etag, tracking_id),
    )
    delivery = blob_created_delivery(blob, properties, settings.storage_account_resource_id)
    sender.post(webhook, delivery, idempotency_key(etag, "blob-created", path))

    if not tracking_id:
        key = settings.tracking_id_metadata_key
        raise MissingTrackingId(
            f"blob {path} has no {key!r} metadata, so its records cannot be correlated and are not "
            f"emitted (its arrival was announced). Upload it again with that metadata, e.g. "
            f"`az storage blob upload ... --metadata {key}=<trackingId>`. After the host's retries "
            f"the blob's receipt goes to the poison queue webjobs-blobtrigger-poison."
        )
    return WorkItem(blob.container_name, blob.blob_name, etag, tracking_id, properties.size).to_json()
