"""The old import path, kept for the flow's serving files until issue 11 moves them.

New code imports from `devstack.supervision.processes`.
"""

from devstack.supervision.processes import (
    ManagedProcess,
    ServiceError,
    ensure_port_free,
    free_port,
    http_ok,
    wait_until,
)

__all__ = ["ManagedProcess", "ServiceError", "ensure_port_free", "free_port", "http_ok", "wait_until"]
