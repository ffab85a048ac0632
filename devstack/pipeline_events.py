"""The old import path, kept for the flow's serving files until issue 11 moves them.

New code imports from `devstack.prefect_queries.pipeline_events`.
"""

from devstack.prefect_queries.pipeline_events import (
    Event,
    blob_created,
    kickoff,
    post_events,
    reconciliation,
    shifted,
    stages,
    summary,
    transfer,
)

__all__ = [
    "Event",
    "blob_created",
    "kickoff",
    "post_events",
    "reconciliation",
    "shifted",
    "stages",
    "summary",
    "transfer",
]
