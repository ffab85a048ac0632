"""A long-running Functions host stand-in, where `func` is missing: `python -m devstack.functions_host`.

FunctionHost runs each registered function with the binding objects the host passes; this adds
what the host does around them with a `LogsAndContainerScan` blob trigger and a queue trigger:

- every blob version in a blob trigger's container runs the function once. As the host does, a
  receipt per ETag is kept in the host's storage (`azure-webjobs-hosts/blobreceipts/<host id>/
  Host.Functions.<name>/<ETag>/<container>/<blob>`, marked `Incomplete` while the function runs),
  so a restart runs nothing twice. A failure is retried after host.json's queue visibilityTimeout;
  after `poisonBlobThreshold` failures the blob goes to `webjobs-blobtrigger-poison`.
- every message of a queue trigger's queue runs the function: deleted on success, retried after
  the visibilityTimeout on failure, moved to `<queue>-poison` after `maxDequeueCount` attempts.

Containers, queues and connections come from the functions' registered bindings. App settings
are read from the environment, as the host reads them; `--settings local.settings.json` adds the
file's values for names the environment does not set (as `func start` does). Blobs and queues
are polled on threads of their own, so a long emission delays no announcement.

    .venv/bin/python -m devstack.functions_host --settings local.settings.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobProperties, ContainerClient

from devstack.functions_host.invoker import FunctionHost, RegisteredFunction

logger = logging.getLogger("devstack.functions_host.polling")

HOST_STORAGE = "AzureWebJobsStorage"
RECEIPTS_CONTAINER = "azure-webjobs-hosts"
POISON_BLOB_QUEUE = "webjobs-blobtrigger-poison"
INCOMPLETE = {"Incomplete": "Incomplete"}  # the host's receipt marker: its presence is what counts


class PollingHost:
    """Polls the app's trigger sources and invokes its functions through a FunctionHost."""

    def __init__(self, host: FunctionHost, poll_seconds: float = 1.0, host_id: str = "polling-host") -> None:
        self.host = host
        self.poll_seconds = poll_seconds
        self.host_id = host_id
        self.blob_functions = [f for f in host.functions.values() if f.trigger["type"] == "blobTrigger"]
        self.queue_functions = [f for f in host.functions.values() if f.trigger["type"] == "queueTrigger"]
        self.receipts = ContainerClient.from_connection_string(host.environ[HOST_STORAGE], RECEIPTS_CONTAINER)
        self._done: set[str] = set()  # receipts known to be complete
        self._failures: dict[str, tuple[int, float]] = {}  # receipt -> (attempts, when to retry)
        self._missing: set[str] = set()  # containers already reported missing

    def describe(self) -> str:
        """The functions and what triggers them, as `func start` lists them."""
        lines = []
        for function in self.blob_functions + self.queue_functions:
            trigger = function.trigger
            source = trigger.get("path") or trigger.get("queueName")
            lines.append(
                f"  {function.name}: {trigger['type']} on {source} (connection {trigger['connection']})"
            )
        return "\n".join(lines)

    def scan_blobs(self) -> None:
        """Run each blob trigger for every blob version it has not completed."""
        for function in self.blob_functions:
            container_name, pattern = function.trigger["path"].split("/", 1)
            if pattern != "{name}":
                raise ValueError(
                    f"{function.name}: only `<container>/{{name}}` blob paths are supported, not {pattern!r}"
                )
            container = ContainerClient.from_connection_string(
                self.host.environ[function.trigger["connection"]], container_name
            )
            try:
                blobs = list(container.list_blobs())
            except ResourceNotFoundError:
                if container_name not in self._missing:
                    logger.warning(
                        "Container %s does not exist yet; %s waits for it", container_name, function.name
                    )
                    self._missing.add(container_name)
                continue
            self._missing.discard(container_name)
            for blob in blobs:
                self._trigger_once(function, container_name, blob)

    def drain_queues(self) -> None:
        """Run each queue trigger for every visible message."""
        for function in self.queue_functions:
            while True:
                started = time.monotonic()
                try:
                    if not self.host.run_queue_trigger(function.name):
                        break
                except Exception as error:  # noqa: BLE001 - whatever a function raises, the host logs and retries
                    logger.error(
                        "Executed 'Functions.%s' (Failed): %s: %s", function.name, type(error).__name__, error
                    )
                else:
                    logger.info(
                        "Executed 'Functions.%s' (Succeeded, %.2f s)",
                        function.name,
                        time.monotonic() - started,
                    )

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set: blobs and queues each on a thread of their own."""
        threads = [
            threading.Thread(target=self._poll, args=(step, stop), name=step.__name__, daemon=True)
            for step in (self.scan_blobs, self.drain_queues)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _poll(self, step: Callable[[], None], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                step()
            except AzureError as error:
                logger.warning("Storage did not answer (%s); polling again in %g s", error, self.poll_seconds)
            stop.wait(self.poll_seconds)

    def _trigger_once(self, function: RegisteredFunction, container: str, blob: BlobProperties) -> None:
        name = (
            f"blobreceipts/{self.host_id}/Host.Functions.{function.name}/{blob.etag}/{container}/{blob.name}"
        )
        if name in self._done:
            return
        receipt = self.receipts.get_blob_client(name)
        attempts, retry_at = self._failures.get(name, (0, 0.0))
        if time.monotonic() < retry_at:
            return
        if not attempts and self._completed(receipt):
            self._done.add(name)
            return
        receipt.upload_blob(b"", overwrite=True, metadata=INCOMPLETE)
        logger.info(
            "Executing 'Functions.%s' (Reason='New blob detected(LogsAndContainerScan): %s/%s', ETag=%s)",
            function.name,
            container,
            blob.name,
            blob.etag,
        )
        started = time.monotonic()
        try:
            self.host.run_blob_trigger(function.name, blob.name)
        except Exception as error:  # noqa: BLE001 - whatever a function raises, the host logs and retries
            attempts += 1
            logger.error(
                "Executed 'Functions.%s' (Failed, attempt %d of %d) for %s/%s: %s: %s",
                function.name,
                attempts,
                self.host.poison_blob_threshold,
                container,
                blob.name,
                type(error).__name__,
                error,
            )
            if attempts < self.host.poison_blob_threshold:
                self._failures[name] = (attempts, time.monotonic() + self.host.retry_seconds)
                return
            self._poison(function, container, blob)
        else:
            logger.info(
                "Executed 'Functions.%s' (Succeeded, %.2f s)", function.name, time.monotonic() - started
            )
        receipt.set_blob_metadata({})  # complete: the marker is gone
        self._failures.pop(name, None)
        self._done.add(name)

    def _completed(self, receipt) -> bool:
        try:
            return "Incomplete" not in receipt.get_blob_properties().metadata
        except ResourceNotFoundError:
            return False

    def _poison(self, function: RegisteredFunction, container: str, blob: BlobProperties) -> None:
        message = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{function.name}",
            "BlobType": "BlockBlob",
            "ContainerName": container,
            "BlobName": blob.name,
            "ETag": blob.etag,
        }
        self.host.queue(HOST_STORAGE, POISON_BLOB_QUEUE).send_message(json.dumps(message))
        logger.error(
            "%s/%s failed %d times: moved to queue %s; it runs again only when a new version is uploaded",
            container,
            blob.name,
            self.host.poison_blob_threshold,
            POISON_BLOB_QUEUE,
        )


def load_settings_file(path: Path) -> None:
    """Put local.settings.json's Values into the environment, where the environment does not set them."""
    try:
        values = json.loads(path.read_text())["Values"]
    except FileNotFoundError:
        sys.exit(
            f"{path} not found: write it with `.venv/bin/python -m devstack.functions_host.local_settings`"
        )
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        sys.exit(f"{path} is not a local.settings.json file with a Values object ({error})")
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=Path, help="a local.settings.json to read app settings from")
    parser.add_argument(
        "--poll-seconds", type=float, default=1.0, help="how often to poll (default: %(default)s)"
    )
    parser.add_argument(
        "--retry-seconds",
        type=int,
        help="wait before retrying a failure (default: host.json's visibilityTimeout)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    if args.settings:
        load_settings_file(args.settings)
    if not os.environ.get(HOST_STORAGE):
        sys.exit(
            f"{HOST_STORAGE} is not set: set it to the storage connection string "
            f"(Azurite: UseDevelopmentStorage=true)"
        )
    app = importlib.import_module("function_app").app
    polling = PollingHost(FunctionHost(app, retry_seconds=args.retry_seconds), args.poll_seconds)
    with contextlib.suppress(ResourceExistsError):
        polling.receipts.create_container()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"Functions host stand-in ready, polling every {args.poll_seconds:g} s:\n{polling.describe()}",
        flush=True,
    )
    polling.run(stop)


if __name__ == "__main__":
    main()
