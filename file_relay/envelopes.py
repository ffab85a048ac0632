"""Record envelopes for the records queue (docs/records-queue.md): JSON that fits one queue message.

A queue message holds 64 KiB once base64-encoded, so an envelope's JSON holds at most 48 KiB
(Azurite accepts 49,152 bytes and refuses 49,153). Records are JSON-escaped to ASCII, so an
envelope's length in characters is its length in bytes.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import accumulate
from json.encoder import encode_basestring_ascii as encode

from file_relay.records import RecordError

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ENVELOPE_BYTES = MAX_MESSAGE_BYTES // 4 * 3
_SEQ_DIGITS = 10


class EnvelopePacker:
    """Packs batches of records into as few envelopes as fit, numbered by `seq` from 1."""

    def __init__(
        self,
        tracking_id: str,
        file_name: str,
        etag: str,
        limit: int = MAX_ENVELOPE_BYTES,
        header_lines: int = 0,
    ) -> None:
        self.header_lines = header_lines  # so errors can name a record's line in the file
        self.identity = {"trackingId": tracking_id, "fileName": file_name, "eTag": etag}
        self._prefix = json.dumps(self.identity, separators=(",", ":"))[:-1] + ',"seq":'
        self._budget = limit - len(self._prefix) - _SEQ_DIGITS - len(',"records":[]}')
        if self._budget < 2:
            raise RecordError(
                f"trackingId and file name leave no room for records in a {limit}-byte envelope"
            )
        self.records = 0
        self.envelopes = 0

    def pack(self, batches: Iterable[list[str]]) -> Iterator[str]:
        """Envelopes holding every record once, in order; records keep their order across envelopes."""
        pending: list[str] = []
        for batch in batches:
            encoded = pending + list(map(encode, batch))
            if not encoded:
                continue
            # ends[j] = bytes of records 0..j-1 joined by commas, plus one: a C-speed prefix sum
            ends = list(accumulate(map((1).__add__, map(len, encoded)), initial=0))
            start = 0
            while True:
                stop = bisect_right(ends, ends[start] + self._budget + 1, lo=start) - 1
                if stop == start:
                    number = self.records + 1
                    raise RecordError(
                        f"record {number} (line {number + self.header_lines}) is {len(encoded[start])} "
                        f"bytes as JSON; an envelope holds at most {self._budget} bytes of records"
                    )
                if stop == len(encoded):
                    break
                yield self._envelope(encoded[start:stop])
                start = stop
            pending = encoded[start:]
        if pending:
            yield self._envelope(pending)

    def final(self) -> str:
        """The envelope that closes the file: how many records and envelopes were sent."""
        final = {
            **self.identity,
            "final": True,
            "totalRecordsSent": self.records,
            "envelopes": self.envelopes,
        }
        return json.dumps(final, separators=(",", ":"))

    def _envelope(self, encoded: list[str]) -> str:
        self.records += len(encoded)
        self.envelopes += 1
        return f'{self._prefix}{self.envelopes},"records":[{",".join(encoded)}]}}'
