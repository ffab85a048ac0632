"""A stand-in for the Java consumer (the Event Transformation System): `python -m simulators.consumer`.

It drains the records queue as docs/records-queue.md tells consumers to: base64, then zlib when
the body starts with 0x78, then the envelope's JSON. Envelopes already seen (same trackingId,
fileName, eTag and seq) are dropped. Each record is checked by the ledger rule
(simulators/ledger.py: `<record number>,ACCT-<4 digits>,<amount with two decimals>`); once a
blob version's final envelope is in and every seq from 1 to `envelopes` is held, it posts
`{"totalRecordsReceived": <records accepted>, "trackingId": ...}` to RECONCILIATION_WEBHOOK_URL
from the env file. A message that is not an envelope moves to `<queue>-poison`, named in the log.

Faults, to show what the flow catches:
  --reject-every N        also reject every Nth record of each file, in the order records arrive
  --drop-every N          lose each record envelope whose seq is a multiple of N (its records too)
  --delay SECONDS         answer this long after a file is complete
  --never-answer PATTERN  never answer for trackingIds matching this glob (`*`: never); repeatable

    .venv/bin/python -m simulators.consumer
    .venv/bin/python -m simulators.consumer --never-answer 'T-late-*' --reject-every 100
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import json
import logging
import signal
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient

from file_relay.delivery import DeliveryError, RetryPolicy, WebhookEndpoint, WebhookSender, idempotency_key
from file_relay.settings import SettingsError, load_settings
from simulators.config import add_location_arguments, read_webhook, storage_connection_string
from simulators.ledger import problem

logger = logging.getLogger("simulators.consumer")
RETRY_ANSWER_SECONDS = 5.0
LOGGED_REJECTIONS = 3  # per file; the rest are counted


class NotAnEnvelope(ValueError):
    """A records-queue message that docs/records-queue.md does not describe."""


@dataclass(frozen=True)
class Faults:
    """What the consumer gets wrong on purpose."""

    reject_every: int = 0
    drop_every: int = 0
    delay: float = 0.0
    never_answer: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("reject_every", "drop_every", "delay"):
            if getattr(self, name) < 0:
                option = "--" + name.replace("_", "-")
                raise ValueError(f"{option} must be 0 (off) or more, not {getattr(self, name):g}")

    def silent_for(self, tracking_id: str) -> bool:
        return any(fnmatch.fnmatchcase(tracking_id, pattern) for pattern in self.never_answer)

    def describe(self) -> str:
        parts = [
            f"reject every {self.reject_every}th record" if self.reject_every else "",
            f"drop envelopes with seq divisible by {self.drop_every}" if self.drop_every else "",
            f"answer {self.delay:g} s late" if self.delay else "",
            f"never answer {', '.join(self.never_answer)}" if self.never_answer else "",
        ]
        return "; ".join(part for part in parts if part) or "none"


NO_FAULTS = Faults()


@dataclass
class BlobVersion:
    """One blob version's progress through the consumer."""

    tracking_id: str
    file_name: str
    etag: str
    seqs: set[int] = field(default_factory=set)
    processed: int = 0
    accepted: int = 0
    final: dict[str, Any] | None = None
    answer_at: float | None = None

    @property
    def complete(self) -> bool:
        return self.final is not None and len(self.seqs) == self.final["envelopes"]


def decode(body: bytes) -> dict[str, Any]:
    """A message body (base64 already decoded) as its envelope; NotAnEnvelope says why not."""
    try:
        envelope = json.loads(zlib.decompress(body) if body[:1] == b"\x78" else body)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotAnEnvelope(f"neither zlib nor JSON ({error})") from None
    identity = ("trackingId", "fileName", "eTag")
    if not isinstance(envelope, dict) or not all(isinstance(envelope.get(key), str) for key in identity):
        raise NotAnEnvelope(f"no trackingId, fileName and eTag: {str(envelope)[:200]}")
    if envelope.get("final") is True:
        if not all(isinstance(envelope.get(key), int) for key in ("totalRecordsSent", "envelopes")):
            raise NotAnEnvelope(
                f"a final envelope without totalRecordsSent and envelopes: {str(envelope)[:200]}"
            )
    elif not isinstance(envelope.get("seq"), int) or not isinstance(envelope.get("records"), list):
        raise NotAnEnvelope(f"a record envelope without seq and records: {str(envelope)[:200]}")
    return envelope


class Consumer:
    """Reads envelopes, counts the valid records of each blob version, and answers with a Reconciliation."""

    def __init__(
        self,
        queue: QueueClient,
        poison: QueueClient,
        webhook: WebhookEndpoint,
        faults: Faults = NO_FAULTS,
        sender: WebhookSender | None = None,
    ) -> None:
        """Args:
        queue: the records queue, read with base64 decoding.
        poison: where messages that are not envelopes go, as they were stored.
        """
        self.queue = queue
        self.poison = poison
        self.webhook = webhook
        self.faults = faults
        self.sender = sender or WebhookSender(RetryPolicy(attempts=3, backoff=0.5), 10)
        self.files: dict[tuple[str, str, str], BlobVersion] = {}
        self.answered: set[tuple[str, str, str]] = set()

    def poll(self) -> int:
        """Handle every visible message, then post the answers that are due; how many messages there were."""
        handled = 0
        for message in self.queue.receive_messages(messages_per_page=32, visibility_timeout=60):
            try:
                self.handle(message.content)
            except NotAnEnvelope as error:
                logger.error(
                    "Message %s is not an envelope (%s): moved to %s",
                    message.id,
                    error,
                    self.poison.queue_name,
                )
                self.poison.send_message(base64.b64encode(message.content).decode())
            self.queue.delete_message(message)
            handled += 1
        self.answer_due()
        return handled

    def handle(self, body: bytes) -> None:
        """One message body, base64 decoded."""
        envelope = decode(body)
        key = (envelope["trackingId"], envelope["fileName"], envelope["eTag"])
        if key in self.answered:
            return  # a redelivery after the answer went out
        state = self.files.setdefault(key, BlobVersion(*key))
        if envelope.get("final"):
            if state.final is None:
                state.final = envelope
        elif envelope["seq"] not in state.seqs:
            state.seqs.add(envelope["seq"])
            self._read(state, envelope)
        if state.complete and state.answer_at is None:
            self._completed(key, state)

    def answer_due(self) -> None:
        """Post the Reconciliations whose time has come; keep the ones the webhook did not take."""
        now = time.monotonic()
        for key, state in list(self.files.items()):
            if state.answer_at is None or state.answer_at > now:
                continue
            assert state.final is not None  # an answer is due only once the final envelope is in
            body = {"totalRecordsReceived": state.accepted, "trackingId": state.tracking_id}
            try:
                self.sender.post(
                    self.webhook, body, idempotency_key(state.etag, "reconciliation", state.file_name)
                )
            except DeliveryError as error:
                logger.error("%s; trying again in %g s", error, RETRY_ANSWER_SECONDS)
                state.answer_at = now + RETRY_ANSWER_SECONDS
                continue
            logger.info(
                "Reconciliation posted for %s (trackingId %s): %d received of %d sent",
                state.file_name,
                state.tracking_id,
                state.accepted,
                state.final["totalRecordsSent"],
            )
            self._forget(key)

    def _read(self, state: BlobVersion, envelope: dict[str, Any]) -> None:
        if self.faults.drop_every and envelope["seq"] % self.faults.drop_every == 0:
            logger.warning(
                "Dropped envelope %d of %s (--drop-every): %d records lost",
                envelope["seq"],
                state.file_name,
                len(envelope["records"]),
            )
            return
        for record in envelope["records"]:
            state.processed += 1
            reason = problem(record) if isinstance(record, str) else "not a string"
            if not reason and self.faults.reject_every and state.processed % self.faults.reject_every == 0:
                reason = "rejected by --reject-every"
            if reason is None:
                state.accepted += 1
                continue
            rejected = state.processed - state.accepted
            if rejected <= LOGGED_REJECTIONS:
                logger.warning(
                    "Rejected a record of %s (trackingId %s): %s: %r",
                    state.file_name,
                    state.tracking_id,
                    reason,
                    record,
                )

    def _completed(self, key: tuple[str, str, str], state: BlobVersion) -> None:
        rejected = state.processed - state.accepted
        logger.info(
            "%s (trackingId %s) complete: %d envelopes, %d records accepted, %d rejected",
            state.file_name,
            state.tracking_id,
            len(state.seqs),
            state.accepted,
            rejected,
        )
        if self.faults.silent_for(state.tracking_id):
            logger.warning("Never answering for trackingId %s (--never-answer)", state.tracking_id)
            self._forget(key)
            return
        state.answer_at = time.monotonic() + self.faults.delay

    def _forget(self, key: tuple[str, str, str]) -> None:
        self.files.pop(key, None)
        self.answered.add(key)


def records_queues(connection_string: str, name: str) -> tuple[QueueClient, QueueClient]:
    """The records queue (read as base64) and its poison queue, both created when missing."""
    queue = QueueClient.from_connection_string(
        connection_string, name, message_decode_policy=BinaryBase64DecodePolicy()
    )
    poison = QueueClient.from_connection_string(connection_string, f"{name}-poison")
    for client in (queue, poison):
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
    return queue, poison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.consumer", description=__doc__.splitlines()[0]
    )
    add_location_arguments(parser, "queue")
    parser.add_argument("--queue", help="the records queue (default: RECORDS_QUEUE, else records)")
    parser.add_argument("--reject-every", type=int, default=0, metavar="N")
    parser.add_argument("--drop-every", type=int, default=0, metavar="N")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--never-answer", action="append", default=[], metavar="PATTERN")
    parser.add_argument(
        "--poll-seconds", type=float, default=0.5, help="idle poll interval (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        faults = Faults(args.reject_every, args.drop_every, args.delay, tuple(args.never_answer))
    except ValueError as error:
        parser.error(str(error))
    if args.poll_seconds <= 0:
        parser.error(f"--poll-seconds must be greater than 0, not {args.poll_seconds:g}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    for noisy in ("azure", "httpx"):  # a line per HTTP request would bury the consumer's own
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = load_settings()
        webhook = read_webhook(args.env_file, "reconciliation")
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    name = args.queue or settings.records_queue
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    consumer = None
    while not stop.is_set():
        try:
            if consumer is None:
                queue, poison = records_queues(
                    storage_connection_string(args.connection_string, settings), name
                )
                consumer = Consumer(queue, poison, webhook, faults)
                print(
                    f"Consumer stand-in ready: reading queue {queue.url}, answering to {webhook.where}; "
                    f"faults: {faults.describe()}",
                    flush=True,
                )
            if consumer.poll():
                continue
        except AzureError as error:
            logger.warning(
                "Queue storage did not answer (%s); trying again in %g s", error, args.poll_seconds
            )
        stop.wait(args.poll_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
