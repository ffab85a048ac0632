"""One serving process per deployment: a lease kept in a Prefect variable.

The coroutine runner takes over every run of its deployment left Running when it starts: the
process that followed them is gone. That is only true if no other serve.py still serves the
deployment, so each one holds this lease: a variable naming its host and pid, renewed every few
seconds. A second serve.py waits until the holder stops (a stopping holder lets go at once; one
that died is recognised by its pid on the same host, or when its lease has not been renewed for
`ttl_seconds`). The variable is visible in the UI under Variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import VariableCreate, VariableUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

RENEW_SECONDS = 5.0
TTL_SECONDS = 30.0
# After writing its claim a process reads it back this much later: of two that claimed at
# once, only the last writer finds its own name.
SETTLE_SECONDS = 1.0


class LeaseLost(RuntimeError):
    """Another process took this deployment's lease: this one must stop serving."""


def variable_name(deployment_id: uuid.UUID) -> str:
    return f"serving-lease-{deployment_id}"


class ServingLease:
    """Held while this process serves the deployment; `async with` waits for it, then keeps it."""

    def __init__(
        self,
        client: PrefectClient,
        deployment_id: uuid.UUID,
        logger: logging.Logger,
        ttl_seconds: float = TTL_SECONDS,
    ) -> None:
        self._client = client
        self._name = variable_name(deployment_id)
        self._logger = logger
        self._ttl = timedelta(seconds=ttl_seconds)
        self._holder = {"process": str(uuid.uuid4()), "host": socket.gethostname(), "pid": os.getpid()}
        self.previous: dict[str, Any] | None = None  # the holder before us, as it last renewed

    async def __aenter__(self) -> ServingLease:
        told = False
        while True:
            current = await self._read()
            if current is None or self._gone(current):
                self.previous = current
                await self._write(current)
                await asyncio.sleep(SETTLE_SECONDS)
                if self._mine(await self._read()):
                    return self
            elif not told:
                self._logger.warning(
                    "Another serve.py serves this deployment (pid %s on %s, lease renewed %s); waiting "
                    "for it to stop. Its lease ends when it stops, or %g s after it last renewed it.",
                    current.get("pid"),
                    current.get("host"),
                    current.get("renewed_at"),
                    self._ttl.total_seconds(),
                )
                told = True
            await asyncio.sleep(RENEW_SECONDS)

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    async def renew(self) -> None:
        """Keep the lease; LeaseLost if another process holds it now."""
        current = await self._read()
        if current is not None and not self._mine(current):
            raise LeaseLost(
                f"serve.py (pid {current.get('pid')} on {current.get('host')}) took over this "
                f"deployment's lease ({self._name}): this process stalled longer than its lease"
            )
        await self._write(current)

    async def release(self) -> None:
        """Let go at once, so a successor need not wait for the lease to run out."""
        if self._mine(await self._read()):
            with contextlib.suppress(ObjectNotFound):
                await self._client.delete_variable_by_name(self._name)

    def _mine(self, value: dict[str, Any] | None) -> bool:
        return value is not None and value.get("process") == self._holder["process"]

    def _gone(self, value: dict[str, Any]) -> bool:
        try:
            renewed = datetime.fromisoformat(value["renewed_at"])
        except (KeyError, TypeError, ValueError):
            return True
        if datetime.now(UTC) - renewed > self._ttl:
            return True
        return value.get("host") == self._holder["host"] and not _alive(value.get("pid"))

    async def _read(self) -> dict[str, Any] | None:
        variable = await self._client.read_variable_by_name(self._name)
        return variable.value if variable is not None and isinstance(variable.value, dict) else None

    async def _write(self, current: dict[str, Any] | None) -> None:
        value = {**self._holder, "renewed_at": datetime.now(UTC).isoformat()}
        if current is None:
            with contextlib.suppress(ObjectAlreadyExists):  # another claimed it too: the read-back decides
                await self._client.create_variable(VariableCreate(name=self._name, value=value))
                return
        await self._client.update_variable(VariableUpdate(name=self._name, value=value))


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
