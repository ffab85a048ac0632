"""A benchmark's files as the pipeline's webhook requests, and the outcome each must have.

The mainframe posts `kickoff` and `transfer` to the `mainframe` webhook, Event Grid (or the
Function App) posts BlobCreated to `azure-storage`, the Function App posts `summary` and the
consumer posts `reconciliation`. The demo's scenarios, reduced to those requests:

succeed   every record arrives                  -> Completed, "N records sent, N received"
mismatch  the consumer received one record less -> Failed, "sent N, received N-1 (1 missing)"
overdue   the consumer never answers            -> Failed once the Reconciliation deadline passes
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from devstack.services import AZURITE_ACCOUNT

Request = tuple[str, Any, str]  # webhook slug, JSON body, idempotency key

OUTCOMES = {
    "succeed": ("COMPLETED", r"{sent} records sent, {sent} received"),
    "mismatch": ("FAILED", r"sent {sent}, received {received} \(1 missing\)"),
    "overdue": ("FAILED", r"overdue: waited .+ after kickoff, never saw Reconciliation \(deadline .+\)"),
}


@dataclass(frozen=True)
class WebhookFile:
    """One file's journey, as webhook requests, built to end as `scenario` says."""

    scenario: str
    file_name: str
    tracking_id: str
    sent: int = 20

    @property
    def run_name(self) -> str:
        """As the flow names the file's run."""
        return f"{self.file_name} [{self.tracking_id}]"

    @property
    def received(self) -> int:
        return self.sent - 1 if self.scenario == "mismatch" else self.sent

    def requests(self) -> list[Request]:
        """Kickoff, transfer, BlobCreated, Summary and (unless overdue) Reconciliation, in pipeline order."""
        mainframe = {"file_name": self.file_name, "trackingId": self.tracking_id}
        url = f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}/incoming/{self.file_name}"
        blob = {
            "eventType": "Microsoft.Storage.BlobCreated",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, url)),
            "subject": f"/blobServices/default/containers/incoming/blobs/{self.file_name}",
            "data": {"api": "PutBlob", "blobType": "BlockBlob", "contentType": "text/csv", "url": url},
        }
        requests = [
            ("mainframe", {**mainframe, "event_name": "kickoff", "stage": "on-prem"}, "kickoff"),
            ("mainframe", {**mainframe, "event_name": "transfer", "stage": "distributed"}, "transfer"),
            ("azure-storage", [blob], "blob"),
            ("summary", {"totalRecordsSent": self.sent, "trackingId": self.tracking_id}, "summary"),
            (
                "reconciliation",
                {"totalRecordsReceived": self.received, "trackingId": self.tracking_id},
                "reconciliation",
            ),
        ]
        if self.scenario == "overdue":
            requests.pop()
        return [(slug, body, f"{self.tracking_id}:{key}") for slug, body, key in requests]

    def judge(self, run: dict[str, Any] | None) -> str | None:
        """None when `run` ended as this file must; else what is wrong."""
        state, pattern = OUTCOMES[self.scenario]
        pattern = pattern.format(sent=self.sent, received=self.received)
        if run is None:
            return f"{self.run_name}: no flow run"
        message = (run.get("state") or {}).get("message") or ""
        if run["state_type"] != state or not re.fullmatch(pattern, message):
            got = f"{run['state_type']} {message!r}"
            return f"{self.run_name} ({self.scenario}): expected {state} {pattern!r}, got {got}"
        return None


def plan(count: int, label: str, scenarios: tuple[str, ...] = tuple(OUTCOMES)) -> list[WebhookFile]:
    """`count` files with unique names and trackingIds, cycling through `scenarios`."""
    token = uuid.uuid4().hex[:8]
    return [
        WebhookFile(scenarios[n % len(scenarios)], f"{label}-{token}-{n}.csv", f"{label}-{token}-{n}", 20 + n)
        for n in range(count)
    ]


def send(gateway_url: str, requests: list[Request], concurrency: int = 16) -> None:
    """POST every request to the gateway's webhooks, `concurrency` at a time; each must get 204."""

    async def send_all() -> None:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=30) as client:

            async def post(slug: str, body: Any, key: str) -> None:
                async with limit:
                    response = await client.post(
                        f"{gateway_url}/hooks/{slug}", json=body, headers={"Idempotency-Key": key}
                    )
                if response.status_code != 204:
                    raise RuntimeError(
                        f"/hooks/{slug} answered {response.status_code}: {response.text[:300]}"
                    )

            await asyncio.gather(*(post(*request) for request in requests))

    asyncio.run(send_all())
