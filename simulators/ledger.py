"""The simulators' record format: the mainframe simulator writes it, the consumer stand-in checks it.

A record is one line of three comma-separated fields: a record number (digits), an account
(`ACCT-` and four digits) and an amount with two decimals, e.g. `7,ACCT-0007,12.50`. Any other
record is malformed and the consumer rejects it.
"""

from __future__ import annotations

import re

RULE = "<record number>,ACCT-<4 digits>,<amount with two decimals>, e.g. 7,ACCT-0007,12.50"
_NUMBER = re.compile(r"[0-9]+")
_ACCOUNT = re.compile(r"ACCT-[0-9]{4}")
_AMOUNT = re.compile(r"-?[0-9]+\.[0-9]{2}")


def record(number: int) -> str:
    """Record `number` (from 1) of a generated file."""
    return f"{number},ACCT-{number % 10000:04d},{number * 37 % 100000 / 100:.2f}"


def malformed_record(number: int) -> str:
    """What record `number` looks like when the mainframe job garbles it: no amount."""
    return f"{number},ACCT-{number % 10000:04d},N/A"


def malformed_positions(records: int, malformed: int) -> list[int]:
    """Which records (from 1) to garble: `malformed` of them, spread evenly over the file."""
    if not 0 <= malformed <= records:
        raise ValueError(f"cannot garble {malformed} of {records} records: choose 0 to {records}")
    return [(2 * index + 1) * records // (2 * malformed) + 1 for index in range(malformed)]


def ledger(records: int, malformed: int = 0) -> bytes:
    """A file of `records` records, one per line; `malformed` of them garbled (malformed_positions)."""
    garbled = set(malformed_positions(records, malformed))
    lines = (malformed_record(n) if n in garbled else record(n) for n in range(1, records + 1))
    return "".join(f"{line}\n" for line in lines).encode()


def problem(text: str) -> str | None:
    """Why `text` is not a valid record, or None when it is."""
    fields = text.split(",")
    if len(fields) != 3:
        return f"{len(fields)} fields, not 3"
    for field, pattern, what in zip(
        fields, (_NUMBER, _ACCOUNT, _AMOUNT), ("record number", "account", "amount"), strict=True
    ):
        if not pattern.fullmatch(field):
            return f"{what} {field!r} is not valid"
    return None
