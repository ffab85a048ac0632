"""Splitting a file's byte stream into records, one per line, without holding more than a chunk.

The work is done on whole chunks with bytes operations (C loops), never record by record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from file_relay.errors import RecordError

BOM = b"\xef\xbb\xbf"


class RecordSplitter:
    """Turns chunks of UTF-8 text into blocks of records, in file order.

    A block is the bytes of one or more records, each followed by LF. One record per line; LF
    and CRLF both end a line; a final line without a line break is a record; blank lines at the
    end of the file are not (blank lines between records are). With `skip_header`, the first
    line is a header, not a record.
    """

    def __init__(self, skip_header: bool, max_line_bytes: int) -> None:
        self.skip_header = skip_header
        self.max_line_bytes = max_line_bytes
        self.lines = 0  # lines read so far, header and blank lines included
        self._blanks = 0  # blank lines not yet known to be followed by a record
        self._first = True

    def split(self, chunks: Iterable[bytes]) -> Iterator[tuple[bytes, int]]:
        """Blocks of records from the chunks, each with its number of records."""
        carry = b""
        for chunk in chunks:
            data = carry + chunk if carry else chunk
            end = data.rfind(b"\n") + 1
            carry = data[end:]
            if len(carry) > self.max_line_bytes:
                line = self.lines + data.count(b"\n", 0, end) + 1
                raise RecordError(
                    f"line {line} is longer than {self.max_line_bytes} bytes, more than a queue message holds"
                )
            if end and (block := self._block(data[:end])):
                yield block
        # A final line without a line break; a lone CR there ends it too.
        if carry and (block := self._block(carry.removesuffix(b"\r") + b"\n")):
            yield block

    def _block(self, lines: bytes) -> tuple[bytes, int] | None:
        """The records of `lines` (whole lines, each ending in LF) and their number; None if none.

        Blank lines at its end are held back until a record follows them.
        """
        if b"\r" in lines:
            lines = lines.replace(b"\r\n", b"\n")
        if not lines.isascii():
            self._check_utf8(lines)
        count = lines.count(b"\n")
        self.lines += count
        if self._first:
            self._first = False
            lines = lines.removeprefix(BOM)
            if self.skip_header:
                lines, count = lines[lines.index(b"\n") + 1 :], count - 1
        if count == len(lines):  # nothing but blank lines
            self._blanks += count
            return None
        kept = len(lines.rstrip(b"\n")) + 1 if lines.endswith(b"\n\n") else len(lines)
        records = b"\n" * self._blanks + lines[:kept] if self._blanks else lines[:kept]
        count += self._blanks - (len(lines) - kept)
        self._blanks = len(lines) - kept
        return records, count

    def _check_utf8(self, lines: bytes) -> None:
        try:
            lines.decode("utf-8")
        except UnicodeDecodeError as error:
            line = self.lines + 1 + lines.count(b"\n", 0, error.start)
            column = error.start - (lines.rfind(b"\n", 0, error.start) + 1) + 1
            raise RecordError(
                f"line {line} is not UTF-8 text (byte 0x{lines[error.start]:02x} at column {column})"
            ) from None
