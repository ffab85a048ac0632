"""What Prefect keeps of an event it answered 204 for: a size and a depth it checks only afterwards.

An event over either is dropped by Prefect's server after the 204 (measured on 3.9.1), so the
gateway refuses it before it answers; failure events copy little enough to stay under both.
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic_core
from prefect.settings import get_current_settings

from webhooks.errors import EventTooLarge

# Prefect refuses to publish a larger event after answering 204; it adds `received` and writes
# some fields its own way, so keep a margin below its limit.
MAX_EVENT_BYTES = get_current_settings().server.events.maximum_size_bytes - 1024
# Prefect's event consumers parse with pydantic-core, which stops at 201 levels of nesting and
# drops the event (after the 204). A body sits two levels down, in `payload.body`.
PREFECT_MAX_DEPTH = 201
MAX_BODY_DEPTH = PREFECT_MAX_DEPTH - 2
# What a failure event copies of each part of the request, at most (as JSON; a string may grow
# up to 6 times when written as JSON).
COPY_LIMIT_BYTES = 16 * 1024


def nesting_depth(value: Any) -> int:
    """How many levels of arrays and objects `value` nests, counted up to MAX_BODY_DEPTH + 1."""
    depth, level = 0, [value] if isinstance(value, (dict, list)) else []
    while level and depth <= MAX_BODY_DEPTH:
        depth += 1
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
    return depth


def excerpt(value: Any) -> Any:
    """`value` when its JSON fits in COPY_LIMIT_BYTES, else its start as text, saying how much is left out."""
    if isinstance(value, str):
        if len(value) <= COPY_LIMIT_BYTES:
            return value
        return f"{value[:COPY_LIMIT_BYTES]}… (truncated: {len(value)} characters in all)"
    text = orjson.dumps(value)
    if len(text) <= COPY_LIMIT_BYTES:
        return value
    return f"{text[:COPY_LIMIT_BYTES].decode(errors='ignore')}… (truncated: {len(text)} bytes of JSON in all)"


def check_publishable(event: dict[str, Any]) -> None:
    """Raise where Prefect would answer 204 for `event` and then drop it: too large, or nested too deep."""
    try:
        text = orjson.dumps(event)
    except orjson.JSONEncodeError as error:
        raise ValueError(f"the event cannot be written as JSON ({error})") from None
    if len(text) > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"the event is {len(text)} bytes as JSON, more than the {MAX_EVENT_BYTES} Prefect publishes "
            f"(PREFECT_EVENTS_MAXIMUM_SIZE_BYTES less a margin): send less, or copy less of the body into it"
        )
    if text.count(b"[") + text.count(b"{") > PREFECT_MAX_DEPTH:
        try:
            pydantic_core.from_json(text)  # the parser Prefect's consumers read events with
        except ValueError:
            raise ValueError(
                f"the event nests deeper than the {PREFECT_MAX_DEPTH} levels Prefect reads"
            ) from None
