"""Run the Function App's functions the way the Functions host does, where the host cannot run.

Binding objects are made by the converters the Python worker itself uses (the blob extension's
`BlobClientConverter` from the host's model binding data, `azure.functions`' queue converter from
a received message), trigger paths, queue names and connections are read from the functions'
registered bindings, and queue outputs and poison queues behave as `host.json` configures them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Generic, TypeVar

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_bindings
from azure.core.exceptions import ResourceExistsError
from azure.functions import meta
from azure.functions.queue import QueueMessageInConverter
from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient, QueueMessage, TextBase64EncodePolicy
from azurefunctions.extensions.base import Datum

from configuration import REPO_ROOT

T = TypeVar("T")
HOST_JSON = REPO_ROOT / "host.json"


class Output(func.Out[T], Generic[T]):
    """An output binding's value, as the worker hands `func.Out` to a function."""

    def __init__(self) -> None:
        self.value: T | None = None

    def set(self, val: T) -> None:
        self.value = val

    def get(self) -> T | None:  # type: ignore[override]  # None until the function sets it
        return self.value


def blob_client_binding(connection: str, container: str, name: str) -> blob_bindings.BlobClient:
    """The `BlobClient` a blob trigger typed `blob.BlobClient` receives: made from model binding data."""
    content = json.dumps({"Connection": connection, "ContainerName": container, "BlobName": name})
    model = SimpleNamespace(
        version="1.0", source="AzureStorageBlobs", content_type="application/json", content=content
    )
    datum = Datum(type="model_binding_data", value=model)
    return blob_bindings.BlobClientConverter.decode(
        datum, trigger_metadata={}, pytype=blob_bindings.BlobClient
    )


def queue_message_binding(message: QueueMessage) -> func.QueueMessage:
    """The `func.QueueMessage` a queue trigger receives for a message read with base64 decoding."""
    metadata = {
        "Id": meta.Datum(message.id, "string"),
        "DequeueCount": meta.Datum(message.dequeue_count, "int"),
        "PopReceipt": meta.Datum(message.pop_receipt, "string"),
        "InsertionTime": meta.Datum(_host_time(message.inserted_on), "string"),
        "ExpirationTime": meta.Datum(_host_time(message.expires_on), "string"),
    }
    return QueueMessageInConverter.decode(meta.Datum(message.content, "bytes"), trigger_metadata=metadata)


def _host_time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00") if moment else None


@dataclass
class RegisteredFunction:
    """One function of the app: its user code and its bindings as the host receives them (JSON)."""

    name: str
    user_function: Any
    bindings: list[dict[str, Any]]

    @property
    def trigger(self) -> dict[str, Any]:
        return next(binding for binding in self.bindings if binding["type"].endswith("Trigger"))

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [binding for binding in self.bindings if binding["direction"] == "OUT"]


def timespan_seconds(value: str) -> float:
    """A host.json time span (`hh:mm:ss`) in seconds."""
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


class FunctionHost:
    """Invokes an app's functions with host-equivalent bindings; connections resolve from `environ`.

    Args:
        retry_seconds: how long a failed queue message stays invisible before its next attempt;
            None: host.json's `visibilityTimeout`, as the host does.
    """

    def __init__(
        self,
        app: func.FunctionApp,
        environ: Mapping[str, str] | None = None,
        retry_seconds: int | None = None,
    ) -> None:
        self.environ = os.environ if environ is None else environ
        extensions = json.loads(HOST_JSON.read_text()).get("extensions", {})
        queues = extensions.get("queues", {})
        self.max_dequeue_count = queues.get("maxDequeueCount", 5)
        self.poison_blob_threshold = extensions.get("blobs", {}).get("poisonBlobThreshold", 5)
        if retry_seconds is None:
            retry_seconds = int(timespan_seconds(queues.get("visibilityTimeout", "00:00:00")))
        self.retry_seconds = retry_seconds
        self.visibility_timeout = 30
        app.functions_bindings = None  # get_functions() caches; a fresh read sees every function
        registered = (
            RegisteredFunction(
                str(function.get_function_name()),  # every function of the app is named
                function.get_user_function(),
                json.loads(function.get_function_json())["bindings"],
            )
            for function in app.get_functions()
        )
        self.functions = {function.name: function for function in registered}

    def queue(self, connection: str, name: str) -> QueueClient:
        """A queue client that reads and writes base64 messages, as the host's queue extension does."""
        client = QueueClient.from_connection_string(
            self.environ[connection],
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=BinaryBase64DecodePolicy(),
        )
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        return client

    def run_blob_trigger(self, function_name: str, blob_name: str) -> dict[str, Any]:
        """Invoke a blob-triggered function for `blob_name`, then write its queue outputs."""
        function = self.functions[function_name]
        trigger = function.trigger
        container = trigger["path"].split("/", 1)[0]
        incoming = blob_client_binding(trigger["connection"], container, blob_name)
        outputs: dict[str, Output[Any]] = {binding["name"]: Output() for binding in function.outputs}
        function.user_function(**{trigger["name"]: incoming}, **outputs)
        for binding in function.outputs:
            value = outputs[binding["name"]].get()
            if binding["type"] == "queue" and value is not None:
                self.queue(binding["connection"], binding["queueName"]).send_message(value)
        return {name: output.get() for name, output in outputs.items()}

    def run_queue_trigger(self, function_name: str) -> bool:
        """Invoke a queue-triggered function for the next visible message; False when there is none.

        On success the message is deleted; on failure it becomes visible again, and after
        maxDequeueCount failures it moves to `<queue>-poison`; the function's error is re-raised.
        """
        function = self.functions[function_name]
        trigger = function.trigger
        queue = self.queue(trigger["connection"], trigger["queueName"])
        message = next(
            iter(queue.receive_messages(max_messages=1, visibility_timeout=self.visibility_timeout)), None
        )
        if message is None:
            return False
        try:
            function.user_function(**{trigger["name"]: queue_message_binding(message)})
        except BaseException:
            if message.dequeue_count >= self.max_dequeue_count:
                poison = self.queue(trigger["connection"], f"{trigger['queueName']}-poison")
                poison.send_message(message.content.decode())
                queue.delete_message(message)
            else:
                queue.update_message(message.id, message.pop_receipt, visibility_timeout=self.retry_seconds)
            raise
        queue.delete_message(message)
        return True
