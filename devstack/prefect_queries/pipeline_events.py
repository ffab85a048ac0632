"""The pipeline's events exactly as the webhook templates make them, posted straight to Prefect.

Tests and benchmarks drive the flow with these, as production would through the webhooks
(the templates are webhooks/templates/*.json.j2; labels are strings, the blob event carries no
trackingId).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

Event = dict[str, Any]


def _event(
    name: str, resource: dict[str, str], payload: dict[str, Any] | None = None, **fields: Any
) -> Event:
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": resource,
        "payload": payload or {},
    }
    event.update(fields)
    return event


def _mainframe(name: str, stage: str, file_name: str, tracking_id: str) -> Event:
    return _event(
        name,
        {
            "prefect.resource.id": "prefect.webhook.mainframe",
            "prefect.resource.name": "prefect.webhook.mainframe",
            "stage": stage,
            "file_name": file_name,
            "trackingId": tracking_id,
        },
    )


def kickoff(file_name: str, tracking_id: str) -> Event:
    return _mainframe("kickoff", "on-prem", file_name, tracking_id)


def transfer(file_name: str, tracking_id: str) -> Event:
    return _mainframe("transfer", "distributed", file_name, tracking_id)


def blob_created(
    file_name: str, container_url: str = "http://127.0.0.1:10000/devstoreaccount1/incoming"
) -> Event:
    """What the azure-storage template makes of Event Grid's BlobCreated (no trackingId)."""
    url = f"{container_url}/{file_name}"
    account, container = container_url.rsplit("/", 2)[-2:]
    grid_id = str(uuid.uuid4())
    return _event(
        "Microsoft.Storage.BlobCreated",
        {"prefect.resource.id": url, "url": url},
        payload={
            "topic": f"/subscriptions/local/providers/Microsoft.Storage/storageAccounts/{account}",
            "subject": f"/blobServices/default/containers/{container}/blobs/{file_name}",
            "eventType": "Microsoft.Storage.BlobCreated",
            "eventTime": datetime.now(UTC).isoformat(),
            "id": grid_id,
            "data": {
                "api": "PutBlob",
                "clientRequestId": grid_id,
                "requestId": grid_id,
                "eTag": "0x8D9000000000000",
                "contentType": "text/csv",
                "contentLength": "1024",
                "blobType": "BlockBlob",
                "url": url,
                "sequencer": "0000000000000000000000000000000000000000000000000",
                "storageDiagnostics": {"batchId": grid_id},
            },
            "dataVersion": "",
            "metadataVersion": "1",
        },
    )


def _counted(name: str, webhook: str, label: str, tracking_id: str, count: int | str) -> Event:
    return _event(
        name,
        {
            "prefect.resource.id": f"prefect.webhook.{webhook}",
            "prefect.resource.name": f"prefect.webhook.{webhook}",
            label: str(count),
            "trackingId": tracking_id,
        },
    )


def summary(tracking_id: str, total_records_sent: int | str) -> Event:
    return _counted("Summary", "summary", "totalRecordsSent", tracking_id, total_records_sent)


def reconciliation(tracking_id: str, total_records_received: int | str) -> Event:
    return _counted(
        "Reconciliation", "reconciliation", "totalRecordsReceived", tracking_id, total_records_received
    )


def stages(file_name: str, tracking_id: str, sent: int | str, received: int | str) -> list[Event]:
    """A file's four stage events, in pipeline order."""
    return [
        transfer(file_name, tracking_id),
        blob_created(file_name),
        summary(tracking_id, sent),
        reconciliation(tracking_id, received),
    ]


def shifted(event: Event, seconds: float) -> Event:
    """The same event with `occurred` moved by `seconds` (negative: earlier)."""
    occurred = datetime.fromisoformat(event["occurred"]) + timedelta(seconds=seconds)
    return {**event, "occurred": occurred.isoformat()}


def post_events(api_url: str, events: list[Event], client: httpx.Client | None = None) -> None:
    """POST the events to Prefect's events endpoint (204), as the gateway does."""
    response = (client or httpx).post(f"{api_url}/events", json=events, timeout=10)
    if response.status_code != 204:
        raise RuntimeError(f"Prefect refused the events ({response.status_code}): {response.text[:300]}")
