"""Forward queued events to Prefect's `POST /events` in paced batches until Prefect has every one.

Prefect's server on SQLite silently drops events above roughly 1,000 per second (see the
design notes), so the forwarder never sends faster than a ceiling, halves its rate when
Prefect answers slowly or fails, and regains it step by step: a burst of webhooks becomes a
longer drain, never a loss. Delivery is at least once: an event whose 204 was lost is sent
again with the same id, and Prefect keeps one (it de-duplicates on id).

One batch at a time cannot send faster than Prefect answers (~1,000 events/s from a Prefect on
Redis, whose answers wait on Redis round trips): `max_in_flight` batches may be on their way
at once, still within the ceiling. When one fails, the others finish, and sending starts again
from the oldest event still queued. Whatever else stops the loop (a full disk right after Prefect
took a batch...) is logged, shown in /health, and the loop starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx

from webhooks.errors import ForwardError
from webhooks.outbox import Outbox, QueuedEvent

logger = logging.getLogger("webhooks.forwarder")

# An answer slower than this means Prefect is struggling: slow down before it starts dropping.
SLOW_ANSWER_SECONDS = 2.0
FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS = 0.5, 10.0
# At shutdown, a batch Prefect is still answering gets this long: finished, it is not sent twice.
IN_FLIGHT_GRACE_SECONDS = 3.0
# Prefect reads a request whole: a batch is at most this large (or one event, when it alone is larger).
MAX_BATCH_BYTES = 4 * 1024 * 1024
# Old deliveries and refused events are forgotten this often.
PRUNE_SECONDS = 600
# Prefect will never accept these events as they are; anything else is worth retrying.
REFUSED_STATUSES = frozenset({400, 413, 422})
_HINTS = {
    401: "; set PREFECT_API_KEY or PREFECT_API_AUTH_STRING for the gateway",
    403: "; the gateway's credentials may not write events",
    404: "; is PREFECT_API_URL the API's URL (it usually ends in /api)?",
}


class Pacer:
    """Keeps the sending rate under a ceiling, halving it when Prefect struggles."""

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.rate = ceiling
        self._next_send = 0.0

    def reserve(self, count: int) -> float:
        """Seconds to wait before sending `count` more events keeps within the current rate."""
        now = time.monotonic()
        start = max(now, self._next_send)
        self._next_send = start + count / self.rate
        return start - now

    def answered(self, seconds: float) -> None:
        if seconds > SLOW_ANSWER_SECONDS:
            self.slow_down()
        else:
            self.rate = min(self.ceiling, self.rate + self.ceiling / 10)

    def slow_down(self) -> None:
        self.rate = max(self.ceiling / 20, self.rate / 2)


class InFlight:
    """Batches on their way to Prefect; a batch that crashed (not just refused) is raised by the loop."""

    def __init__(self, wake: asyncio.Event) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashed: list[BaseException] = []
        self._wake = wake

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, sending: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(sending)
        self._tasks.add(task)
        task.add_done_callback(self._settle)

    def raise_first_crash(self) -> None:
        if self._crashed:
            raise self._crashed[0]

    async def wait_for_one(self) -> None:
        await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def finish(self, raise_errors: bool) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=not raise_errors)

    def _settle(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._crashed.append(error)
            self._wake.set()  # wake the loop to raise it


class Forwarder:
    """Moves events from the outbox into Prefect, batch by batch."""

    def __init__(
        self,
        outbox: Outbox,
        api_url: str,
        max_events_per_second: float,
        batch_size: int,
        auth_headers: dict[str, str] | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self.outbox = outbox
        self.api_url = api_url.rstrip("/")
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.pacer = Pacer(max_events_per_second)
        self.delivered = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._client = httpx.AsyncClient(headers=auth_headers or {}, timeout=httpx.Timeout(30.0, connect=5.0))
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._failed = False
        self._pruned_at = 0.0
        self._retry_in = FIRST_RETRY_SECONDS
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="forwarder")

    async def stop(self, drain_seconds: float) -> None:
        """Forward what can be forwarded within `drain_seconds`; the rest stays queued for the next start."""
        self._draining = True
        self.outbox.committed.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=drain_seconds)
            if not done:
                self._stopping.set()  # start no other batch, stop waiting
                done, _ = await asyncio.wait({self._task}, timeout=IN_FLIGHT_GRACE_SECONDS)
            if not done:
                self._task.cancel()  # its batch stays queued: sent again at the next start, kept once
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._client.aclose()

    async def prefect_reachable(self) -> bool:
        try:
            return (await self._client.get(f"{self.api_url}/health", timeout=2.0)).status_code == 200
        except httpx.TransportError:
            return False

    async def _supervise(self) -> None:
        """Run the forwarding loop until it is stopped; start it again whenever it fails."""
        while True:
            try:
                return await self._run()
            # Supervision: whatever stopped the loop, accepted events must not wait for a restart.
            except Exception as error:  # noqa: BLE001
                self.restarts += 1
                note = f" (forwarding starts again in {self._retry_in:.1f} s)"
                self._record_error(f"forwarding stopped: {error!r}", logging.ERROR, note, error)
            if await self._pause(self._retry_in * random.uniform(0.8, 1.2)):
                return None
            self._retry_in = min(LAST_RETRY_SECONDS, self._retry_in * 2)

    async def _run(self) -> None:
        in_flight = InFlight(wake=self.outbox.committed)
        after = 0  # the last queued event handed to a batch in flight
        self._failed, self._pruned_at = False, 0.0
        try:
            while not self._stopping.is_set():
                in_flight.raise_first_crash()
                await self._prune_when_due()
                if len(in_flight) >= self.max_in_flight:
                    await in_flight.wait_for_one()
                elif self._failed:
                    after = await self._start_over(in_flight)
                elif batch := await self._next_batch(after):
                    after = batch[-1].seq
                    if await self._pause(self.pacer.reserve(len(batch))):
                        return
                    in_flight.add(self._send(batch))
                elif in_flight:
                    await in_flight.wait_for_one()
                elif self._draining:
                    return
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.outbox.committed.wait(), 60)
        finally:
            # Stopping: batches Prefect is answering finish (stop() cancels them after its grace).
            await in_flight.finish(raise_errors=False)

    async def _prune_when_due(self) -> None:
        if time.monotonic() - self._pruned_at > PRUNE_SECONDS:
            await self.outbox.forget_old()
            self._pruned_at = time.monotonic()

    async def _next_batch(self, after: int) -> list[QueuedEvent]:
        self.outbox.committed.clear()  # set again by the next commit: no new event goes unnoticed
        return await self.outbox.next_batch(self.batch_size, after, MAX_BATCH_BYTES)

    async def _start_over(self, in_flight: InFlight) -> int:
        """After a batch Prefect did not take: let the others finish, back off, and start again from
        the oldest event still queued (sequence number 0)."""
        await in_flight.finish(raise_errors=True)
        self._failed = False
        await self._pause(self._retry_in * random.uniform(0.8, 1.2))
        self._retry_in = min(LAST_RETRY_SECONDS, self._retry_in * 2)
        return 0

    async def _send(self, batch: list[QueuedEvent]) -> None:
        """Forward one batch; when Prefect does not take it, note it (the run loop retries) and slow down."""
        try:
            await self._forward(batch)
        except ForwardError as error:
            self._record_error(str(error), logging.WARNING, f" (retrying in {self._retry_in:.1f} s)")
            self.pacer.slow_down()
            self._failed = True
        else:
            self._retry_in = FIRST_RETRY_SECONDS

    async def _pause(self, seconds: float) -> bool:
        """Sleep, cut short by stop(); True if stopping."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _forward(self, batch: list[QueuedEvent]) -> None:
        url = f"{self.api_url}/events"
        started = time.monotonic()
        try:
            response = await self._client.post(
                url,
                content=b"[" + b",".join(item.event for item in batch) + b"]",
                headers={"content-type": "application/json"},
            )
        except httpx.TransportError as error:
            raise ForwardError(f"cannot reach Prefect at {url}: {error!r}") from None
        self.pacer.answered(time.monotonic() - started)
        if response.is_success:
            await self.outbox.delivered(batch)
            self.delivered += len(batch)
            return
        if response.status_code not in REFUSED_STATUSES:
            hint = _HINTS.get(response.status_code, "")
            raise ForwardError(
                f"Prefect answered {response.status_code} to POST {url}{hint}: {_reason(response)}"
            )
        if len(batch) > 1:
            # Find the event Prefect refuses; the others must not wait behind it.
            for item in batch:
                await self._forward([item])
            return
        refusal = f"Prefect refused event {batch[0].id} ({response.status_code}): {_reason(response)}"
        await self.outbox.reject(batch[0], refusal)
        self._record_error(refusal, logging.ERROR, "; kept in the outbox's `rejected` table")

    def _record_error(self, error: str, level: int, note: str, exc_info: BaseException | None = None) -> None:
        self.last_error, self.last_error_at = error, datetime.now(UTC)
        logger.log(level, "%s%s", error, note, exc_info=exc_info)


def _reason(response: httpx.Response) -> str:
    """What Prefect said, without the values it echoes back: a refused event's payload may hold secrets."""
    try:
        answer = response.json()
    except ValueError:
        return response.text[:300]
    if not isinstance(answer, dict):
        return response.text[:300]
    details = answer.get("exception_detail")
    if isinstance(details, list):
        return "; ".join(
            f"{'.'.join(map(str, detail.get('loc', [])))}: {detail.get('msg')}"
            for detail in details
            if isinstance(detail, dict)
        )
    return str(answer.get("exception_message") or answer.get("detail") or response.reason_phrase)[:300]
