"""The Functions host stand-in as a real process: Azurite for storage, a real receiver for the webhooks."""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient

from configuration import REPO_ROOT
from devstack.functions_host.local_settings import local_settings
from devstack.functions_host.polling import POISON_BLOB_QUEUE, RECEIPTS_CONTAINER
from devstack.supervision.processes import ManagedProcess, wait_until
from file_relay.settings import SETTINGS
from tests.relay_fixtures import decode_message
from tests.webhook_receiver import WebhookReceiver

BLOB_CREATED = "/hooks/azure-storage"


class StandIn:
    """One polling host process, its settings in a local.settings.json, as docs/function-app.md runs it."""

    def __init__(self, azurite, receiver: WebhookReceiver, tmp_path: Path, log_dir: Path) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.settings = local_settings(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "INCOMING_CONTAINER": f"poll-{suffix}",
                "EMIT_QUEUE": f"poll-emit-{suffix}",
                "RECORDS_QUEUE": f"poll-records-{suffix}",
                "AZURE_STORAGE_WEBHOOK_URL": receiver.url(BLOB_CREATED),
                "SUMMARY_WEBHOOK_URL": receiver.url("/hooks/summary"),
                "WEBHOOK_BACKOFF_SECONDS": "0.05",
            }
        )["Values"]
        settings_file = tmp_path / "local.settings.json"
        settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": self.settings}))
        self.receiver = receiver
        self.container = BlobServiceClient.from_connection_string(
            azurite.connection_string
        ).get_container_client(self.settings["INCOMING_CONTAINER"])
        self.container.create_container()
        # The app settings come from the file only: none leak in from this test process.
        env = {name: value for name, value in os.environ.items() if name not in {s.name for s in SETTINGS}}
        argv = [sys.executable, "-m", "devstack.functions_host", "--settings", str(settings_file)]
        self.process = ManagedProcess(
            f"polling-host-{suffix}",
            [*argv, "--poll-seconds", "0.2", "--retry-seconds", "0"],
            log_dir / f"polling-host-{suffix}.log",
            env=env,
            cwd=REPO_ROOT,
        )

    def start(self) -> StandIn:
        self.process.start()
        self.process.wait_healthy(lambda: "ready" in self.process.output(), 60)
        return self

    def upload(self, name: str, data: bytes, **metadata: str) -> str:
        """Upload a blob; its ETag as Event Grid shows it."""
        self.container.upload_blob(name, data, overwrite=True, metadata=metadata)
        return self.container.get_blob_client(name).get_blob_properties().etag.strip('"')

    def announcements(self, name: str) -> list[dict]:
        """Every BlobCreated delivery posted for blob `name`, retries included."""
        posted = [request.json()[0] for request in self.receiver.to(BLOB_CREATED)]
        return [event for event in posted if event["subject"].endswith(f"/blobs/{name}")]

    def wait_announced(self, name: str, times: int = 1) -> list[dict]:
        return wait_until(
            lambda: len(found := self.announcements(name)) >= times and found,
            30,
            f"{times} announcement(s) of {name}",
        )


@pytest.fixture
def stand_in(azurite, receiver, tmp_path, service_logs) -> Iterator[Callable[[], StandIn]]:
    started: list[StandIn] = []

    def start() -> StandIn:
        host = StandIn(azurite, receiver, tmp_path, service_logs).start()
        started.append(host)
        return host

    yield start
    for host in started:
        host.process.stop()


def test_each_blob_version_is_announced_once_and_emitted_and_an_overwrite_is_announced_again(
    stand_in, azurite
):
    host = stand_in()
    first_etag = host.upload("ledger.csv", b"1\n2\n3\n", trackingId="T-poll-1")

    [announced] = host.wait_announced("ledger.csv")
    records = QueueClient.from_connection_string(azurite.connection_string, host.settings["RECORDS_QUEUE"])

    def final_envelopes() -> list[dict]:
        try:
            envelopes = [decode_message(message.content) for message in records.peek_messages(32)]
        except ResourceNotFoundError:  # the emitter creates the queue
            return []
        return [envelope for envelope in envelopes if envelope.get("final")]

    final = wait_until(final_envelopes, 30, "the final envelope")
    # Every scan lists the whole container: once `other.csv` is announced, ledger.csv was passed over again.
    host.upload("other.csv", b"x\n", trackingId="T-poll-2")
    host.wait_announced("other.csv")
    second_etag = host.upload("ledger.csv", b"1\n2\n3\n4\n", trackingId="T-poll-1")
    host.wait_announced("ledger.csv", times=2)

    assert announced["data"]["eTag"] == first_etag
    assert final[0]["totalRecordsSent"] == 3 and final[0]["trackingId"] == "T-poll-1"
    assert [event["data"]["eTag"] for event in host.announcements("ledger.csv")] == [first_etag, second_etag]


def test_a_restarted_host_keeps_the_receipts_and_runs_no_blob_version_twice(stand_in, azurite):
    host = stand_in()
    etag = host.upload("kept.csv", b"1\n", trackingId="T-poll-3")
    host.wait_announced("kept.csv")
    host.process.stop()

    host.start()
    host.upload("after.csv", b"1\n", trackingId="T-poll-4")
    host.wait_announced("after.csv")

    assert len(host.announcements("kept.csv")) == 1
    receipts = ContainerClient.from_connection_string(azurite.connection_string, RECEIPTS_CONTAINER)
    [receipt] = [
        blob
        for blob in receipts.list_blobs(include=["metadata"])
        if blob.name.endswith(f"/{host.settings['INCOMING_CONTAINER']}/kept.csv")
    ]
    assert receipt.name.startswith("blobreceipts/polling-host/Host.Functions.announce_file/")
    assert etag in receipt.name and "Incomplete" not in receipt.metadata


def test_a_blob_that_keeps_failing_is_tried_up_to_the_threshold_then_goes_to_the_poison_queue(
    stand_in, azurite
):
    host = stand_in()
    host.upload("anonymous.csv", b"1\n")  # no trackingId: announced, then the function fails

    attempts = host.wait_announced("anonymous.csv", times=5)
    poison = QueueClient.from_connection_string(azurite.connection_string, POISON_BLOB_QUEUE)

    def poisoned() -> list[dict]:
        messages = (json.loads(base64.b64decode(message.content)) for message in poison.peek_messages(32))
        return [body for body in messages if body["ContainerName"] == host.settings["INCOMING_CONTAINER"]]

    [message] = wait_until(poisoned, 30, "the poison message")

    assert message["BlobName"] == "anonymous.csv" and message["FunctionId"] == "Host.Functions.announce_file"
    assert len({json.dumps(event) for event in attempts}) == 1  # every attempt posted the same delivery
    assert "has no 'trackingId' metadata" in host.process.output()
    host.upload("named.csv", b"1\n", trackingId="T-poll-5")
    host.wait_announced("named.csv")
    assert len(host.announcements("anonymous.csv")) == 5
