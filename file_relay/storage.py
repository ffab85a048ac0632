"""Clients for the storage account a connection setting names, the way the Functions host resolves it.

A connection is either an app setting holding a connection string, or identity settings sharing
its name as prefix (`<name>__accountName`, `<name>__blobServiceUri`, `<name>__queueServiceUri`,
optionally `<name>__credential=managedidentity` and `<name>__clientId`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import requests
from azure.storage.blob import BlobClient, BlobServiceClient
from azure.storage.queue import BinaryBase64EncodePolicy, QueueClient
from requests.adapters import HTTPAdapter

from file_relay.errors import SettingsError

# The first GET of a download is 32 MiB by default; 4 MiB for every request keeps memory flat.
CHUNK_BYTES = 4 * 1024 * 1024


class StorageAccount:
    """The blob and queue endpoints of one connection, with its credential."""

    def __init__(self, connection: str, environ: Mapping[str, str] | None = None) -> None:
        self.connection = connection
        self.environ = os.environ if environ is None else environ
        self.connection_string = self.environ.get(connection, "").strip()
        if not self.connection_string and not self._identity_endpoint("blob"):
            raise SettingsError(
                f"the storage connection {connection!r} is not set: set the app setting {connection} to "
                f"a connection string (locally `UseDevelopmentStorage=true`), or, for a managed identity, "
                f"{connection}__blobServiceUri and {connection}__queueServiceUri (AzureWebJobsStorage may "
                f"use AzureWebJobsStorage__accountName). STORAGE_CONNECTION names which setting to use."
            )

    def blob(self, container: str, name: str) -> BlobClient:
        """A client for one blob that downloads in CHUNK_BYTES pieces."""
        options: dict[str, Any] = {"max_single_get_size": CHUNK_BYTES, "max_chunk_get_size": CHUNK_BYTES}
        if self.connection_string:
            service = BlobServiceClient.from_connection_string(self.connection_string, **options)
        else:
            service = BlobServiceClient(
                self._identity_endpoint("blob"), credential=self._credential(), **options
            )
        return service.get_blob_client(container, name)

    def queue(self, name: str, concurrency: int = 1) -> QueueClient:
        """A client for queue `name` sending bytes as base64 messages, as Functions queue triggers expect."""
        # One pooled connection per concurrent sender: the default pool of 10 would discard the rest.
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(concurrency, 1))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        options: dict[str, Any] = {"message_encode_policy": BinaryBase64EncodePolicy(), "session": session}
        if self.connection_string:
            return QueueClient.from_connection_string(self.connection_string, name, **options)
        return QueueClient(self._identity_endpoint("queue"), name, credential=self._credential(), **options)

    def _identity_endpoint(self, service: str) -> str:
        prefix = self.connection
        explicit = self.environ.get(f"{prefix}__{service}ServiceUri")
        if not explicit and service == "blob":
            explicit = self.environ.get(f"{prefix}__serviceUri")
        if explicit:
            return explicit
        account = self.environ.get(f"{prefix}__accountName")
        return f"https://{account}.{service}.core.windows.net" if account else ""

    def _credential(self):
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        if self.environ.get(f"{self.connection}__credential", "").lower() == "managedidentity":
            return ManagedIdentityCredential(client_id=self.environ.get(f"{self.connection}__clientId"))
        return DefaultAzureCredential()
