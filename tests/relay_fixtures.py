"""Fixtures for the Function App's tests: a webhook receiver and the app on Azurite with its own names.

Each `start_relay(...)` sets the app settings (unique container and queues per test, the webhooks
pointing at the receiver), imports `function_app` afresh as the host would index it, and returns
a `Relay` that uploads blobs and runs the registered functions through `FunctionHost`.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient, ContentSettings
from azure.storage.queue import QueueClient

from devstack.functions_host.invoker import FunctionHost
from devstack.services import Azurite
from file_relay.settings import SETTINGS
from tests.webhook_receiver import WebhookReceiver

CONNECTION = "RELAY_STORAGE"


@dataclass
class Relay:
    """The Function App as one test configured it."""

    module: ModuleType
    host: FunctionHost
    settings: dict[str, str]
    container: ContainerClient
    records: QueueClient

    def upload(
        self,
        name: str,
        data: bytes,
        tracking_id: str | None = None,
        content_type: str = "text/csv",
        **metadata: str,
    ) -> BlobProperties:
        """Upload a blob (with `trackingId` metadata unless None) and return its properties."""
        if tracking_id is not None:
            metadata = {"trackingId": tracking_id, **metadata}
        blob = self.container.get_blob_client(name)
        blob.upload_blob(
            data, overwrite=True, metadata=metadata, content_settings=ContentSettings(content_type)
        )
        return blob.get_blob_properties()

    def announce(self, name: str) -> dict[str, Any]:
        """Run the blob trigger for blob `name`; return its output bindings' values."""
        return self.host.run_blob_trigger("announce_file", name)

    def emit(self) -> bool:
        """Run the emitter for the next work item; False when the emit queue is empty."""
        return self.host.run_queue_trigger("emit_records")

    def emit_queue(self) -> QueueClient:
        """The emit queue, read and written as the host does (base64)."""
        return self.host.queue(CONNECTION, self.settings["EMIT_QUEUE"])

    def work_items(self) -> list[bytes]:
        """The work items waiting on the emit queue, without removing them."""
        return [message.content for message in self.emit_queue().peek_messages(max_messages=32)]

    def messages(self) -> list[str]:
        """Every message on the records queue, as stored (base64 text), without removing them."""
        messages = self.records.receive_messages(messages_per_page=32, visibility_timeout=600)
        return [message.content for message in messages]

    def envelopes(self) -> list[dict[str, Any]]:
        """The records queue's envelopes, decoded as docs/records-queue.md tells consumers to."""
        return [decode_message(message) for message in self.messages()]


def decode_message(message: str) -> dict[str, Any]:
    """base64, then zlib when the body starts with 0x78 (a zlib header), then JSON."""
    body = base64.b64decode(message)
    return json.loads(zlib.decompress(body) if body[:1] == b"\x78" else body)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on a free loopback port."""
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def start_relay(
    azurite: Azurite, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Relay]:
    """Factory: the Function App with these settings over the defaults a test needs."""

    def start(**overrides: str) -> Relay:
        suffix = uuid.uuid4().hex[:12]
        settings = {
            CONNECTION: azurite.connection_string,
            "STORAGE_CONNECTION": CONNECTION,
            "INCOMING_CONTAINER": f"incoming-{suffix}",
            "EMIT_QUEUE": f"emit-{suffix}",
            "RECORDS_QUEUE": f"records-{suffix}",
            "AZURE_STORAGE_WEBHOOK_URL": receiver.url("/hooks/azure-storage"),
            "SUMMARY_WEBHOOK_URL": receiver.url("/hooks/summary"),
            "WEBHOOK_BACKOFF_SECONDS": "0.05",
            "WEBHOOK_TIMEOUT_SECONDS": "5",
            **overrides,
        }
        for setting in SETTINGS:
            monkeypatch.delenv(setting.name, raising=False)
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        sys.modules.pop("function_app", None)
        module = importlib.import_module("function_app")
        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
            settings["INCOMING_CONTAINER"]
        )
        container.create_container()
        records = QueueClient.from_connection_string(azurite.connection_string, settings["RECORDS_QUEUE"])
        # A failed message is retried at once, not after host.json's visibilityTimeout.
        return Relay(module, FunctionHost(module.app, retry_seconds=0), settings, container, records)

    return start
