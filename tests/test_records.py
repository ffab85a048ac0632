"""Splitting a byte stream into records, whatever the chunk boundaries."""

from __future__ import annotations

import pytest

from file_relay.records import RecordError, RecordSplitter


def split(data: bytes, header: bool = False, chunk: int = 4, max_line: int = 1000) -> list[str]:
    """The records, checking that each block is whole LF-ended records and counts them right."""
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    blocks = list(RecordSplitter(header, max_line).split(chunks))
    assert all(block.endswith(b"\n") and count == block.count(b"\n") for block, count in blocks)
    return [record.decode() for block, _ in blocks for record in block.split(b"\n")[:-1]]


CASES = [
    (b"", False, []),
    (b"a\nb\n", False, ["a", "b"]),
    (b"a\nb", False, ["a", "b"]),
    (b"a\r\nb\r\n", False, ["a", "b"]),
    (b"a\r\nb", False, ["a", "b"]),
    (b"a\r\n\r\nb\r\n\r\n\r\n", False, ["a", "", "b"]),
    (b"\n\na\n", False, ["", "", "a"]),
    (b"\n\n\n", False, []),
    (b"a\rb\n", False, ["a\rb"]),
    (b"a\nb\r", False, ["a", "b"]),
    (b"h\n1\n2\n", True, ["1", "2"]),
    (b"h\r\n", True, []),
    (b"h", True, []),
    (b"\xef\xbb\xbfh,x\n1,2\n", True, ["1,2"]),
    (b"\xef\xbb\xbf1,2\n", False, ["1,2"]),
    ("Müller;€\r\nłódź\n".encode(), False, ["Müller;€", "łódź"]),
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
@pytest.mark.parametrize(("data", "header", "expected"), CASES)
def test_records_are_the_same_for_every_chunk_size(data, header, expected, chunk):
    assert split(data, header, chunk) == expected


def test_the_line_count_includes_header_and_blank_lines():
    splitter = RecordSplitter(skip_header=True, max_line_bytes=100)

    list(splitter.split([b"h\n1\n\n2\n\n"]))

    assert splitter.lines == 5


def test_text_that_is_not_utf8_names_its_line_and_column():
    with pytest.raises(RecordError, match=r"line 3 is not UTF-8 text \(byte 0xe9 at column 4\)"):
        split(b"ok\nfine\ncaf\xe9\n", chunk=5)


def test_a_line_longer_than_a_message_holds_is_refused_before_it_fills_memory():
    chunks = iter([b"ok\n"] + [b"x" * 64] * 1_000_000)

    with pytest.raises(RecordError, match="line 2 is longer than 100 bytes"):
        list(RecordSplitter(False, 100).split(chunks))
