"""The old import path, kept for the flow's serving files until issue 11 moves them.

New code imports from `devstack.supervision.process_stats`.
"""

from devstack.supervision.process_stats import alive, cpu_seconds, descendants, pss_kib

__all__ = ["alive", "cpu_seconds", "descendants", "pss_kib"]
