"""Record envelopes for the records queue (docs/records-queue.md), each the body of one queue message.

A queue message holds 64 KiB once base64-encoded, so a body holds at most 48 KiB (Azurite
accepts 49,152 bytes and refuses 49,153). The body is the envelope's JSON, or that JSON
zlib-compressed (RECORDS_COMPRESSION): then an envelope holds as many records as compress into
a body, at most MAX_INFLATED_BYTES of JSON.

Records are JSON-escaped to ASCII with bytes operations on whole blocks and separated by a comma
and a line break in the envelope's JSON (`["a",\\n"b"]`): a raw line break can appear nowhere else
in JSON, so it marks where a run of records can be cut without looking at each record.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Generator, Iterable, Iterator
from json.encoder import encode_basestring_ascii

from file_relay.errors import RecordError

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ENVELOPE_BYTES = MAX_MESSAGE_BYTES // 4 * 3
MAX_INFLATED_BYTES = 1024 * 1024
# Level 1 packs CSV-like records about as tightly as level 6, several times faster.
ZLIB_LEVEL = 1
# Envelopes aim 5% below what the last one's compression ratio says fits, so few overflow and are cut again.
BUDGET_MARGIN = 0.95
_SEQ_DIGITS = 10
# Bytes that stand for themselves in JSON once the escapes below are applied.
_PLAIN = bytes(range(0x20, 0x7F)) + b"\t\r\n"
_ESCAPES = ((b"\\", b"\\\\"), (b'"', b'\\"'), (b"\t", b"\\t"), (b"\r", b"\\r"))


def json_records(block: bytes) -> bytes:
    """The records of `block` (each followed by LF) as JSON strings in ASCII, without their opening quote.

    Each record becomes its escaped text followed by `",\\n"`: the quote that closes it, the comma,
    the line break and the quote that opens the next one.
    """
    if block.translate(None, _PLAIN):  # non-ASCII or control characters: the JSON encoder's way
        records = block.decode()[:-1].split("\n")
        return ",\n".join(map(encode_basestring_ascii, records)).encode()[1:] + b',\n"'
    for raw, escaped in _ESCAPES:
        if raw in block:
            block = block.replace(raw, escaped)
    return block.replace(b"\n", b'",\n"')


class EnvelopePacker:
    """Packs blocks of records into as few message bodies as fit, numbered by `seq` from 1."""

    def __init__(
        self,
        tracking_id: str,
        file_name: str,
        etag: str,
        compress: bool = True,
        limit: int = MAX_ENVELOPE_BYTES,
        header_lines: int = 0,
    ) -> None:
        self.compress = compress
        self.limit = limit
        self.header_lines = header_lines  # so errors can name a record's line in the file
        self.identity = {"trackingId": tracking_id, "fileName": file_name, "eTag": etag}
        self._prefix = json.dumps(self.identity, separators=(",", ":"))[:-1].encode() + b',"seq":'
        # The most records' JSON an uncompressed envelope holds: the limit for any one record too.
        self.record_limit = limit - len(self._prefix) - _SEQ_DIGITS - len(b',"records":[]}')
        if self.record_limit < 2:
            raise RecordError(
                f"trackingId and file name leave no room for records in a {limit}-byte envelope"
            )
        self.budget = self.record_limit  # records' JSON per envelope; grows with the compression ratio seen
        self._max_budget = MAX_INFLATED_BYTES - (limit - self.record_limit)
        self.records = 0  # records packed so far
        self.envelopes = 0

    def pack(self, blocks: Iterable[tuple[bytes, int]]) -> Iterator[bytes]:
        """Message bodies holding every record once, in order; records keep their order across envelopes."""
        pending = b'"'  # records not yet in an envelope, from the quote that opens the first
        for block, count in blocks:
            pending += json_records(block)
            self.records += count
            pending = yield from self._cut(pending, final=False)
        yield from self._cut(pending, final=True)

    def final(self) -> bytes:
        """The body that closes the file: how many records and envelopes were sent."""
        final = {
            **self.identity,
            "final": True,
            "totalRecordsSent": self.records,
            "envelopes": self.envelopes,
        }
        envelope = json.dumps(final, separators=(",", ":")).encode()
        return zlib.compress(envelope, ZLIB_LEVEL) if self.compress else envelope

    def _cut(self, records: bytes, final: bool) -> Generator[bytes, None, bytes]:
        """Bodies of full envelopes cut from `records` (all of them when `final`); returns the rest."""
        start = 0
        while len(records) - start > (1 if final else self.budget):
            end = self._fill(records, start)
            if body := self._body(records[start:end]):
                yield body
                start = end + 2  # past the comma and line break, to the next record's opening quote
        return records[start:]

    def _fill(self, records: bytes, start: int) -> int:
        """Where the longest run of whole records from `start` within the budget ends (at a comma).

        It steps at most one record limit at a time, so a record too long for any envelope is
        found wherever the budget ends.
        """
        stop, end, step = start + self.budget, start, start
        while step < len(records) - 1:
            reach = min(step + self.record_limit, stop)
            line_break = records.rfind(b"\n", step, reach + 2)
            if line_break < 0:
                if reach == stop and end > start:
                    break
                raise self._too_long(records, step)
            end, step = line_break - 1, line_break + 1
        return end

    def _too_long(self, records: bytes, start: int) -> RecordError:
        number = self.records - records.count(b"\n", start) + 1
        size = records.find(b"\n", start) - 1 - start
        return RecordError(
            f"record {number} (line {number + self.header_lines}) is {size} bytes as JSON; "
            f"an envelope holds at most {self.record_limit} bytes of records"
        )

    def _body(self, run: bytes) -> bytes | None:
        """The next envelope's body, holding `run`; None if it compressed past the limit (budget shrinks)."""
        envelope = b'%s%d,"records":[%s]}' % (self._prefix, self.envelopes + 1, run)
        body = envelope
        if self.compress:
            body = zlib.compress(envelope, ZLIB_LEVEL)
            fits = int(self.limit * len(envelope) / len(body) * BUDGET_MARGIN)
            self.budget = min(max(fits, self.record_limit), self._max_budget)
            if len(body) > self.limit and len(run) > self.budget:
                return None  # rare: these records compress worse than the ones before; cut fewer
            if len(body) > self.limit:
                # Only records that compress worse than their JSON (printable ASCII never does): send the
                # JSON, which fits by the record limit; consumers tell the two apart by the first byte.
                body = envelope
        self.envelopes += 1
        return body
