"""The old import path, kept for the flow's serving files until issue 11 moves them.

New code imports from `devstack.services.datastores`.
"""

from devstack.services.datastores import Postgres, Redis

__all__ = ["Postgres", "Redis"]
