"""Packing records into envelopes that fit one queue message, checked against Azurite's real limit."""

from __future__ import annotations

import json
import random
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.queue import QueueClient

from file_relay.envelopes import MAX_ENVELOPE_BYTES, MAX_MESSAGE_BYTES, EnvelopePacker
from file_relay.records import RecordError
from file_relay.storage import StorageAccount


def packed(records: list[list[str]], limit: int = MAX_ENVELOPE_BYTES) -> tuple[EnvelopePacker, list[str]]:
    packer = EnvelopePacker("T-1", "dir/file.csv", "0x8DC", limit=limit)
    return packer, list(packer.pack(records))


def test_envelopes_hold_every_record_once_in_order_and_fit_the_limit():
    rng = random.Random(7)
    alphabet = 'abc,"\\\t/é€😀 '
    batches = [
        ["".join(rng.choices(alphabet, k=rng.randrange(0, 900))) for _ in range(rng.randrange(0, 400))]
        for _ in range(30)
    ]

    packer, envelopes = packed(batches)

    parsed = [json.loads(envelope) for envelope in envelopes]
    assert [record for e in parsed for record in e["records"]] == [r for batch in batches for r in batch]
    assert [e["seq"] for e in parsed] == list(range(1, len(parsed) + 1))
    assert all(len(envelope.encode()) <= MAX_ENVELOPE_BYTES and envelope.isascii() for envelope in envelopes)
    # Greedy: an envelope closes only when the next record would not fit (10 bytes are kept for `seq`).
    for envelope, following in zip(parsed, parsed[1:], strict=False):
        used = len(json.dumps(envelope, separators=(",", ":"))) - len(str(envelope["seq"]))
        assert used + 1 + len(json.dumps(following["records"][0])) > MAX_ENVELOPE_BYTES - 10
    assert (packer.records, packer.envelopes) == (sum(map(len, batches)), len(envelopes))


def test_the_final_envelope_counts_records_and_envelopes():
    packer, _ = packed([["a", "b"], ["c"]])

    assert json.loads(packer.final()) == {
        "trackingId": "T-1",
        "fileName": "dir/file.csv",
        "eTag": "0x8DC",
        "final": True,
        "totalRecordsSent": 3,
        "envelopes": 1,
    }


@pytest.fixture
def queue(azurite) -> QueueClient:
    """A fresh queue on Azurite, written through the emitter's own client (base64 messages)."""
    queue = StorageAccount("TEST_STORAGE", {"TEST_STORAGE": azurite.connection_string}).queue(
        f"envelopes-{uuid.uuid4().hex[:8]}"
    )
    queue.create_queue()
    return queue


def test_the_envelope_limit_is_the_queue_limit_azurite_enforces(queue):
    queue.send_message("x" * MAX_ENVELOPE_BYTES)
    with pytest.raises(HttpResponseError, match="request body is too large"):
        queue.send_message("x" * (MAX_ENVELOPE_BYTES + 1))
    assert len(list(queue.peek_messages())) == 1
    assert MAX_MESSAGE_BYTES == 4 * MAX_ENVELOPE_BYTES // 3


def test_a_full_envelope_is_accepted_by_the_queue(queue):
    _, envelopes = packed([["\u00e9" * 7_000] * 4 + ["x" * 50] * 10_000])

    for envelope in envelopes:
        queue.send_message(envelope)

    assert max(map(len, envelopes)) > MAX_ENVELOPE_BYTES - 100


def test_a_record_that_cannot_fit_names_its_number_and_line():
    packer = EnvelopePacker("T-1", "f.csv", "0x1", limit=200, header_lines=1)

    with pytest.raises(RecordError, match=r"record 3 \(line 4\) is 302 bytes as JSON"):
        list(packer.pack([["a", "b"], ["x" * 300]]))
