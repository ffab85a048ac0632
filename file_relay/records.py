"""Splitting a file's byte stream into records, one per line, without holding more than a chunk."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

BOM = "\ufeff"


class RecordError(ValueError):
    """A record that cannot be sent; the message says which line or record and why."""


class RecordSplitter:
    """Turns chunks of UTF-8 text into batches of records, in file order.

    One record per line; LF and CRLF both end a line; a final line without a line break is a
    record; blank lines at the end of the file are not (blank lines between records are).
    With `skip_header`, the first line is a header, not a record.
    """

    def __init__(self, skip_header: bool, max_line_bytes: int) -> None:
        self.skip_header = skip_header
        self.max_line_bytes = max_line_bytes
        self.lines = 0  # lines read so far, header and blank lines included
        self._blanks = 0  # blank lines not yet known to be followed by a record
        self._first = True

    def split(self, chunks: Iterable[bytes]) -> Iterator[list[str]]:
        """Batches of records from the chunks; the last line may span any number of chunks."""
        carry = b""
        for chunk in chunks:
            data = carry + chunk if carry else chunk
            end = data.rfind(b"\n")
            carry = data[end + 1 :]
            if len(carry) > self.max_line_bytes:
                line = self.lines + data.count(b"\n", 0, end + 1) + 1
                raise RecordError(
                    f"line {line} is longer than {self.max_line_bytes} bytes, more than a queue message holds"
                )
            if end < 0:
                continue
            lines = self._decode(data[: end + 1]).split("\n")
            lines.pop()  # the empty string after the last line break
            if batch := self._records(lines):
                yield batch
        # A final line without a line break; a lone CR there ends it too.
        if carry and (batch := self._records([self._decode(carry).removesuffix("\r")])):
            yield batch

    def _decode(self, data: bytes) -> str:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = self.lines + 1 + data.count(b"\n", 0, error.start)
            column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
            raise RecordError(
                f"line {line} is not UTF-8 text (byte 0x{data[error.start]:02x} at column {column})"
            ) from None
        return text.replace("\r\n", "\n") if "\r" in text else text

    def _records(self, lines: list[str]) -> list[str]:
        self.lines += len(lines)
        if self._first:
            self._first = False
            lines[0] = lines[0].removeprefix(BOM)
            if self.skip_header:
                lines = lines[1:]
        last = len(lines)
        while last and not lines[last - 1]:
            last -= 1
        if not last:
            self._blanks += len(lines)
            return []
        records = lines if last == len(lines) else lines[:last]
        if self._blanks:
            records = [""] * self._blanks + records
        self._blanks = len(lines) - last
        return records
