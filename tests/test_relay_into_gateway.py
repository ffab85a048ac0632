"""The Function App's webhook calls, signed and authenticated, through the real gateway into Prefect."""

from __future__ import annotations

import base64
import os
import uuid

import httpx
import pytest

from devstack.prefect_queries.events import read_events, wait_for_events
from webhooks.catalog import DEFAULT_CONFIG

SIGNING_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
TOKEN = uuid.uuid4().hex


@pytest.fixture(scope="module")
def guarded_gateway(start_gateway, prefect_server, tmp_path_factory):
    """The repo's webhooks, the Summary signed (Standard Webhooks), the file announcement behind a token."""
    config = tmp_path_factory.mktemp("guarded") / "webhooks.toml"
    text = DEFAULT_CONFIG.read_text().replace("templates/", f"{DEFAULT_CONFIG.parent}/templates/")
    text = text.replace(
        'template = "' + f"{DEFAULT_CONFIG.parent}/templates/summary.json.j2" + '"',
        'template = "'
        + f"{DEFAULT_CONFIG.parent}/templates/summary.json.j2"
        + '"\nauth = "standard-webhooks"',
    ).replace(
        'template = "' + f"{DEFAULT_CONFIG.parent}/templates/azure-storage.json.j2" + '"',
        'template = "' + f"{DEFAULT_CONFIG.parent}/templates/azure-storage.json.j2" + '"\nauth = "bearer"',
    )
    assert text.count("auth = ") == 2, "the repo's webhooks.toml changed shape; update this fixture"
    config.write_text(text)
    return start_gateway(
        prefect_server.api_url,
        config=config,
        extra_env={"SUMMARY_WEBHOOK_SECRET": SIGNING_SECRET, "AZURE_STORAGE_WEBHOOK_TOKEN": TOKEN},
    )


def test_a_file_announced_and_emitted_twice_makes_one_event_of_each_kind(
    start_relay, guarded_gateway, prefect_server
):
    relay = start_relay(
        AZURE_STORAGE_WEBHOOK_URL=guarded_gateway.hook_url("azure-storage"),
        AZURE_STORAGE_WEBHOOK_TOKEN=TOKEN,
        SUMMARY_WEBHOOK_URL=guarded_gateway.hook_url("summary"),
        SUMMARY_WEBHOOK_SECRET=SIGNING_SECRET,
    )
    tracking = str(uuid.uuid4())
    properties = relay.upload("orders.csv", b"a\nb\nc\n", tracking_id=tracking)
    blob_url = relay.container.get_blob_client("orders.csv").url

    # The host runs both functions again for the same blob version (a retry after a lost ack).
    for _ in range(2):
        relay.announce("orders.csv")
        assert relay.emit()

    # The gateway forwards in order: once an event posted after both runs is stored, theirs are too.
    sentinel = str(uuid.uuid4())
    httpx.post(
        guarded_gateway.hook_url("mainframe"),
        json={
            "event_name": "transfer",
            "stage": "distributed",
            "file_name": "sentinel",
            "trackingId": sentinel,
        },
    ).raise_for_status()
    wait_for_events(prefect_server.api_url, 1, ["transfer"], {"labels": {"trackingId": [sentinel]}})

    summary = read_events(prefect_server.api_url, ["Summary"], {"labels": {"trackingId": [tracking]}})
    announced = read_events(prefect_server.api_url, ["Microsoft.Storage.BlobCreated"], {"id": [blob_url]})
    assert len(summary) == 1 and len(announced) == 1
    assert summary[0]["resource"]["totalRecordsSent"] == "3"
    # Event Grid writes the ETag without the quotes HTTP puts around it.
    assert announced[0]["payload"]["data"]["eTag"] == properties.etag.strip('"')
