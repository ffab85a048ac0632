"""Storage clients from a connection setting: a connection string (on Azurite) or identity settings."""

from __future__ import annotations

import base64
import uuid

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.blob import BlobServiceClient

from file_relay.settings import SettingsError
from file_relay.storage import CHUNK_BYTES, StorageAccount


def test_a_connection_string_reaches_blobs_in_4_mib_requests_and_queues_in_base64(azurite):
    account = StorageAccount("MY_STORAGE", {"MY_STORAGE": azurite.connection_string})
    name = f"storage-{uuid.uuid4().hex[:8]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(name)
    blob = account.blob(name, "nine.bin")
    blob.upload_blob(b"x" * (9 << 20))
    queue = account.queue(name, concurrency=4)
    queue.create_queue()

    queue.send_message("héllo".encode())

    assert [len(chunk) for chunk in blob.download_blob().chunks()] == [CHUNK_BYTES, CHUNK_BYTES, 1 << 20]
    [message] = queue.peek_messages()
    assert base64.b64decode(message.content).decode() == "héllo"


def test_identity_settings_give_account_endpoints_and_a_managed_identity():
    account = StorageAccount(
        "AzureWebJobsStorage",
        {
            "AzureWebJobsStorage__accountName": "stfilerelay",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
        },
    )

    blob = account.blob("incoming", "a.csv")
    queue = account.queue("records")

    assert blob.url == "https://stfilerelay.blob.core.windows.net/incoming/a.csv"
    assert queue.url == "https://stfilerelay.queue.core.windows.net/records"
    assert isinstance(blob.credential, ManagedIdentityCredential)


def test_explicit_service_uris_win_and_default_credentials_are_used_without_a_credential_setting():
    account = StorageAccount(
        "FILES",
        {"FILES__blobServiceUri": "https://b.example.net", "FILES__queueServiceUri": "https://q.example.net"},
    )

    assert account.blob("c", "n").url == "https://b.example.net/c/n"
    assert account.queue("records").url == "https://q.example.net/records"
    assert isinstance(account.blob("c", "n").credential, DefaultAzureCredential)


def test_a_connection_that_is_not_set_names_the_setting_and_the_ways_to_set_it():
    with pytest.raises(
        SettingsError,
        match=r"'FILES' is not set: set the app setting FILES .*"
        r"FILES__blobServiceUri and FILES__queueServiceUri",
    ):
        StorageAccount("FILES", {"STORAGE_CONNECTION": "FILES"})
