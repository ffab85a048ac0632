"""Packing records into message bodies that fit one queue message, checked against Azurite's real limit."""

from __future__ import annotations

import json
import random
import string
import uuid
import zlib
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.queue import QueueClient

from file_relay.envelopes import (
    MAX_ENVELOPE_BYTES,
    MAX_INFLATED_BYTES,
    MAX_MESSAGE_BYTES,
    EnvelopePacker,
    json_records,
)
from file_relay.records import RecordError
from file_relay.storage import StorageAccount

# Any printable ASCII, tabs and CRs too: a record is a line, so only LF is left out.
PRINTABLE = string.printable.replace("\n", "")


def block(records: list[str]) -> tuple[bytes, int]:
    """Records as RecordSplitter yields them: each followed by LF, with their count."""
    return "".join(f"{record}\n" for record in records).encode(), len(records)


def packed(
    batches: list[list[str]], compress: bool, limit: int = MAX_ENVELOPE_BYTES
) -> tuple[EnvelopePacker, list[bytes]]:
    packer = EnvelopePacker("T-1", "dir/file.csv", "0x8DC", compress=compress, limit=limit)
    return packer, list(packer.pack(block(batch) for batch in batches if batch))


def inflate(body: bytes) -> bytes:
    """A body as a consumer reads it: zlib data starts with 0x78, JSON with `{`."""
    return zlib.decompress(body) if body[:1] == b"\x78" else body


def random_records(rng: random.Random, count: int, alphabet: str, longest: int) -> list[str]:
    return ["".join(rng.choices(alphabet, k=rng.randrange(0, longest))) for _ in range(count)]


def check_envelopes(packer: EnvelopePacker, bodies: list[bytes], batches: list[list[str]]) -> list[dict]:
    """Every record once, in order, `seq` from 1, every body within the limits; the envelopes."""
    assert all(
        len(body) <= MAX_ENVELOPE_BYTES and len(inflate(body)) <= MAX_INFLATED_BYTES for body in bodies
    )
    envelopes = [json.loads(inflate(body)) for body in bodies]
    assert [record for e in envelopes for record in e["records"]] == [r for batch in batches for r in batch]
    assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))
    assert (packer.records, packer.envelopes) == (sum(map(len, batches)), len(bodies))
    return envelopes


@pytest.mark.parametrize("compress", [True, False])
def test_envelopes_hold_every_record_once_in_order_and_fit_the_limit(compress):
    rng = random.Random(7)
    batches = [
        random_records(rng, rng.randrange(0, 400), 'abc,"\\\t\r/é€😀\x01\x7f ', 900) for _ in range(30)
    ]

    packer, bodies = packed(batches, compress)

    check_envelopes(packer, bodies, batches)
    assert all(inflate(body).isascii() for body in bodies)
    assert all(body.startswith(b"\x78") == compress for body in bodies)


def test_uncompressed_envelopes_close_only_when_the_next_record_would_not_fit():
    rng = random.Random(8)
    batches = [random_records(rng, 300, PRINTABLE, 900) for _ in range(10)]

    packer, bodies = packed(batches, compress=False)

    envelopes = check_envelopes(packer, bodies, batches)
    for body, envelope, following in zip(bodies, envelopes, envelopes[1:], strict=False):
        used = len(body) - len(str(envelope["seq"]))  # 10 bytes are kept for `seq`
        assert used + len(",\n") + len(json.dumps(following["records"][0])) > MAX_ENVELOPE_BYTES - 10


def test_compressed_envelopes_carry_as_many_records_as_compress_into_one_message():
    batches = [
        [f"{n:010d},ACME CORPORATION,2024-01-31,{n % 997:08d}.00,EUR" for n in range(k, k + 5000)]
        for k in range(0, 100_000, 5000)
    ]

    packer, bodies = packed(batches, compress=True)

    check_envelopes(packer, bodies, batches)
    uncompressed = EnvelopePacker("T-1", "dir/file.csv", "0x8DC", compress=False)
    assert len(bodies) * 5 < len(list(uncompressed.pack(block(batch) for batch in batches)))
    assert all(len(body) > MAX_ENVELOPE_BYTES * 0.8 for body in bodies[1:-1])


def test_incompressible_records_still_fit_when_they_follow_compressible_ones():
    rng = random.Random(9)
    batches = [["same old record"] * 200_000, random_records(rng, 4000, PRINTABLE, 600)]
    packer = EnvelopePacker("T-1", "dir/file.csv", "0x8DC", compress=True)
    budgets = []

    def blocks() -> Iterator[tuple[bytes, int]]:
        for batch in batches:
            budgets.append(packer.budget)
            yield block(batch)

    bodies = list(packer.pack(blocks()))

    # The repeated records reach the inflated limit; the random ones were first packed with a budget
    # meant for 20x compression, overflowed, and were cut again with smaller budgets.
    assert budgets[1] > 20 * MAX_ENVELOPE_BYTES
    check_envelopes(packer, bodies, batches)


def test_the_final_envelope_counts_records_and_envelopes():
    for compress in (True, False):
        packer, _ = packed([["a", "b"], ["c"]], compress)

        assert json.loads(inflate(packer.final())) == {
            "trackingId": "T-1",
            "fileName": "dir/file.csv",
            "eTag": "0x8DC",
            "final": True,
            "totalRecordsSent": 3,
            "envelopes": 1,
        }


def test_records_are_json_strings_each_followed_by_a_line_break():
    assert json_records(b'a,"b"\n\\x\t\n\n') == b'a,\\"b\\"",\n"\\\\x\\t",\n"",\n"'
    assert json_records("é\x01\n".encode()) == b'\\u00e9\\u0001",\n"'


@pytest.fixture
def queue(azurite) -> QueueClient:
    """A fresh queue on Azurite, written through the emitter's own client (base64 messages)."""
    queue = StorageAccount("TEST_STORAGE", {"TEST_STORAGE": azurite.connection_string}).queue(
        f"envelopes-{uuid.uuid4().hex[:8]}"
    )
    queue.create_queue()
    return queue


def test_the_envelope_limit_is_the_queue_limit_azurite_enforces(queue):
    queue.send_message(b"x" * MAX_ENVELOPE_BYTES)
    with pytest.raises(HttpResponseError, match="request body is too large"):
        queue.send_message(b"x" * (MAX_ENVELOPE_BYTES + 1))
    assert len(list(queue.peek_messages())) == 1
    assert MAX_MESSAGE_BYTES == 4 * MAX_ENVELOPE_BYTES // 3


@pytest.mark.parametrize(("compress", "fill"), [(True, 0.8), (False, 0.98)])
def test_full_envelopes_are_accepted_by_the_queue(queue, compress, fill):
    rng = random.Random(10)
    batches = [["\u00e9" * 7_000] * 4 + ["x" * 50] * 10_000, random_records(rng, 2000, PRINTABLE, 400)]
    _, bodies = packed(batches, compress)

    for body in bodies:
        queue.send_message(body)

    assert max(map(len, bodies)) > MAX_ENVELOPE_BYTES * fill


@pytest.mark.parametrize("compress", [True, False])
def test_a_record_that_cannot_fit_names_its_number_and_line(compress):
    packer = EnvelopePacker("T-1", "f.csv", "0x1", compress=compress, limit=200, header_lines=1)

    with pytest.raises(RecordError, match=r"record 3 \(line 4\) is 302 bytes as JSON"):
        list(packer.pack([block(["a", "b"]), block(["x" * 300])]))


def test_a_record_too_long_is_found_even_where_compression_would_make_it_fit():
    packer = EnvelopePacker("T-1", "f.csv", "0x1", compress=True)
    records = ["ok"] * 50_000 + ["y" * 60_000] + ["ok"] * 10

    with pytest.raises(RecordError, match=r"record 50001 \(line 50001\) is 60002 bytes as JSON"):
        list(packer.pack([block(records)]))
