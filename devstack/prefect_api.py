"""The old import path, kept for the flow's serving files until issue 11 moves them.

New code imports from `devstack.prefect_queries.events`.
"""

from devstack.prefect_queries.events import count_events, read_events, wait_for_events

__all__ = ["count_events", "read_events", "wait_for_events"]
