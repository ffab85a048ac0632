"""The mainframe's side, simulated: `python -m simulators.mainframe kickoff|transfer|upload|run`.

A legacy scheduler's job posts `kickoff` to the mainframe webhook when it starts a file, posts
`transfer` when it ships it, and uploads the file to the incoming container with the file's
trackingId in the blob's metadata; `run` does all three, in that order. A generated file has
`--records` records in the ledger format (simulators/ledger.py), `--malformed` of them garbled.

Webhook URLs (and tokens or signing secrets) come from the env file that `python -m webhooks
provision` writes (`--local`: the gateway's). Storage is the Function App's: INCOMING_CONTAINER and
TRACKING_ID_METADATA_KEY from the environment (default `incoming`, `trackingId`); the connection
string from --connection-string, else the setting STORAGE_CONNECTION names (AzureWebJobsStorage),
else Azurite on its default ports. From the repository root:

    .venv/bin/python -m simulators.mainframe run --records 100 --malformed 2
    .venv/bin/python -m simulators.mainframe run --file ledger.csv
    .venv/bin/python -m simulators.mainframe kickoff --file-name ledger.csv --tracking-id T-1
    .venv/bin/python -m simulators.mainframe transfer --file-name ledger.csv --tracking-id T-1
    .venv/bin/python -m simulators.mainframe upload --file ledger.csv --tracking-id T-1
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobProperties, ContainerClient, ContentSettings

from file_relay.delivery import DeliveryError, RetryPolicy, WebhookEndpoint, WebhookSender, idempotency_key
from file_relay.settings import SettingsError, load_settings
from simulators.config import (
    DEFAULT_ENV_FILE,
    add_location_arguments,
    read_webhook,
    storage_connection_string,
)
from simulators.ledger import ledger, malformed_positions

STAGES = {"kickoff": "on-prem", "transfer": "distributed"}


class MainframeError(RuntimeError):
    """The simulated job could not do a step; the message says what to fix."""


@dataclass
class Mainframe:
    """One mainframe job's view of the pipeline: its webhook and the container it uploads to."""

    webhook: WebhookEndpoint
    container: ContainerClient
    tracking_id_key: str = "trackingId"
    sender: WebhookSender = field(
        default_factory=lambda: WebhookSender(RetryPolicy(attempts=5, backoff=0.5), 10)
    )

    @classmethod
    def configured(
        cls,
        env_file: Path = DEFAULT_ENV_FILE,
        connection_string: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Mainframe:
        """The mainframe as the env file and the Function App's settings (`environ`) describe it."""
        environ = os.environ if environ is None else environ
        settings = load_settings(environ)
        container = ContainerClient.from_connection_string(
            storage_connection_string(connection_string, settings, environ), settings.incoming_container
        )
        return cls(read_webhook(env_file, "mainframe"), container, settings.tracking_id_metadata_key)

    def kickoff(self, file_name: str, tracking_id: str) -> None:
        """The job started the file: Prefect starts a flow run that follows it."""
        self._post("kickoff", file_name, tracking_id)

    def transfer(self, file_name: str, tracking_id: str) -> None:
        """The job shipped the file."""
        self._post("transfer", file_name, tracking_id)

    def upload(self, file_name: str, data: bytes | IO[bytes], tracking_id: str) -> BlobProperties:
        """Put the file in the incoming container with its trackingId in the metadata."""
        blob = self.container.get_blob_client(file_name)
        try:
            blob.upload_blob(
                data,
                overwrite=True,
                metadata={self.tracking_id_key: tracking_id},
                content_settings=ContentSettings(content_type="text/csv"),
            )
            return blob.get_blob_properties()
        except ResourceNotFoundError:
            raise MainframeError(
                f"container {self.container.container_name!r} does not exist at {self.container.url}: "
                f"create it, or set INCOMING_CONTAINER to the Function App's container"
            ) from None
        except ServiceRequestError as error:
            raise MainframeError(
                f"cannot reach blob storage at {self.container.url} ({error}): is Azurite running "
                f"(`make demo` starts it)? Pass --connection-string for another account"
            ) from None

    def _post(self, event: str, file_name: str, tracking_id: str) -> None:
        body = {
            "event_name": event,
            "file_name": file_name,
            "stage": STAGES[event],
            "trackingId": tracking_id,
        }
        # One key per file and step: a retried request, or the same step sent again, makes one event.
        key = idempotency_key(tracking_id, event, file_name)
        try:
            self.sender.post(self.webhook, body, key)
        except DeliveryError as error:
            raise MainframeError(str(error)) from None


@contextmanager
def _file_content(args: argparse.Namespace) -> Iterator[tuple[str, bytes | IO[bytes], str]]:
    """(blob name, content, what it is) from --file, or a generated ledger of --records."""
    if args.file:
        if args.malformed:
            raise MainframeError("--malformed garbles generated records; it cannot change a --file")
        try:
            handle = args.file.open("rb")
        except OSError as error:
            raise MainframeError(f"cannot read --file {args.file}: {error.strerror}") from None
        with handle:
            yield args.name or args.file.name, handle, str(args.file)
        return
    try:
        garbled = malformed_positions(args.records, args.malformed)
    except ValueError as error:
        raise MainframeError(f"--malformed: {error}") from None
    what = f"{args.records} generated records"
    if garbled:
        what += f", malformed: record {', '.join(map(str, garbled))}"
    yield args.name or f"ledger-{uuid.uuid4().hex[:8]}.csv", ledger(args.records, args.malformed), what


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.mainframe", description=__doc__.splitlines()[0]
    )
    add_location_arguments(parser, "blob")
    commands = parser.add_subparsers(dest="command", required=True)
    for event in STAGES:
        step = commands.add_parser(event, help=f"post the {event} event")
        step.add_argument(
            "--file-name", required=True, help="the file's name, as it will be in the container"
        )
        step.add_argument("--tracking-id", default=None, help="the file's trackingId (default: a new one)")
    for command, what in (("upload", "upload a file"), ("run", "kickoff, transfer and upload, in order")):
        step = commands.add_parser(command, help=what)
        source = step.add_mutually_exclusive_group()
        source.add_argument("--file", type=Path, help="the file to upload (default: a generated ledger)")
        source.add_argument(
            "--records", type=int, default=20, help="records to generate (default: %(default)s)"
        )
        step.add_argument("--malformed", type=int, default=0, help="generated records to garble (default: 0)")
        step.add_argument("--name", help="blob name (default: the file's name, or ledger-<random>.csv)")
        step.add_argument("--tracking-id", default=None, help="the file's trackingId (default: a new one)")
    args = parser.parse_args(argv)
    tracking_id = args.tracking_id or str(uuid.uuid4())
    try:
        mainframe = Mainframe.configured(args.env_file, args.connection_string)
        if args.command in STAGES:
            getattr(mainframe, args.command)(args.file_name, tracking_id)
            print(
                f"{args.command} sent for {args.file_name} (trackingId {tracking_id}) "
                f"to {mainframe.webhook.where}"
            )
            return 0
        with _file_content(args) as (name, data, what):
            if args.command == "run":
                mainframe.kickoff(name, tracking_id)
                print(f"kickoff sent for {name} (trackingId {tracking_id})")
                mainframe.transfer(name, tracking_id)
                print(f"transfer sent for {name}")
            properties = mainframe.upload(name, data, tracking_id)
        print(
            f"uploaded {name} ({what}; {properties.size} bytes) to {mainframe.container.url} "
            f"with trackingId {tracking_id}"
        )
        return 0
    except (MainframeError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
