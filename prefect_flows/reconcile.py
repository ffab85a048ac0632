"""The reconciliation rules: records sent against records received, as pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from prefect.events.schemas.events import Event

from prefect_flows.stages import RECONCILIATION, SUMMARY, Stage

Outcome = Literal["matched", "mismatched", "invalid", "overdue"]


@dataclass(frozen=True)
class Verdict:
    """How a file ended: the outcome, the message a person reads, and the counts when known."""

    outcome: Outcome
    message: str
    sent: int | None = None
    received: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "matched"


def reconcile(summaries: list[Event], receipts: list[Event]) -> Verdict:
    """Compare the Summary's totalRecordsSent with the Reconciliation's totalRecordsReceived.

    Args:
        summaries: every distinct Summary event of the file (redeliveries included).
        receipts: every distinct Reconciliation event of the file.
    """
    sent, sent_problems = agreed_count(SUMMARY, summaries)
    received, received_problems = agreed_count(RECONCILIATION, receipts)
    problems = sent_problems + received_problems
    if problems:
        return Verdict("invalid", "; ".join(problems), sent, received)
    assert sent is not None and received is not None
    if sent == received:
        return Verdict("matched", f"{records(sent)} sent, {received} received", sent, received)
    gap = sent - received
    difference = f"{gap} missing" if gap > 0 else f"{-gap} extra"
    return Verdict("mismatched", f"sent {sent}, received {received} ({difference})", sent, received)


def agreed_count(stage: Stage, events: list[Event]) -> tuple[int | None, list[str]]:
    """The one count that all of a file's events for `stage` state, or what is wrong with them."""
    event_name, label = stage.event, stage.count_label
    assert label, f"{event_name} states no count"
    counts: dict[int, list[str]] = {}
    problems = []
    for event in events:
        raw = event.resource.get(label)
        count = parse_count(raw)
        if count is None:
            stated = f"no {label}" if raw is None else f"{label} {raw!r}, which is not a whole number"
            problems.append(f"{event_name} event {event.id} has {stated}")
        else:
            counts.setdefault(count, []).append(str(event.id))
    if len(counts) > 1:
        stated = ", ".join(f"{count} (event {', '.join(ids)})" for count, ids in sorted(counts.items()))
        problems.append(
            f"{len(events)} {event_name} events for this trackingId disagree on {label}: {stated}"
        )
    if problems:
        return None, problems
    if not counts:
        return None, [f"no {event_name} event with {label} was seen"]
    return next(iter(counts)), []


def parse_count(raw: str | None) -> int | None:
    """A record count from a label ("123"), or None when it is not a non-negative whole number."""
    if raw is None or not re.fullmatch(r"\s*[0-9]+\s*", raw):
        return None
    return int(raw)


def records(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"


def overdue(missing: dict[Stage, float], waited_seconds: float) -> Verdict:
    """The verdict for stages not seen in time.

    Args:
        missing: each stage not seen, with its deadline in seconds after kickoff.
    """
    stages = ", ".join(
        f"{stage.event} (deadline {format_duration(deadline)})" for stage, deadline in missing.items()
    )
    return Verdict(
        "overdue", f"overdue: waited {format_duration(waited_seconds)} after kickoff, never saw {stages}"
    )


def format_duration(seconds: float) -> str:
    """A duration a person reads at a glance: `12.3 s`, `4 min 05 s`, `2 h 03 min`."""
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    if seconds < 3600:
        return f"{sign}{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{sign}{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
