"""Wait for Prefect events without missing one: a live subscription plus reads of stored events.

Prefect's subscriber alone loses events: it backfills only the last minute, an event published
just before it connects is neither streamed nor yet stored (events reach the database in
batches), a websocket drop opens a gap, and the server drops events for a subscriber that falls
256 behind. So the waiter subscribes first, then reads what the server stored since `since`
(paging at 50, the server's maximum), and reads again after every reconnect and every
`reread_seconds`; each event is handed over once, by id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventOccurredFilter, EventOrder
from prefect.events.schemas.events import Event
from prefect.logging import get_logger
from websockets.exceptions import WebSocketException

# The events filter API answers 422 above 50 events per page.
PAGE_SIZE = 50
STREAM_ERRORS = (WebSocketException, OSError, TimeoutError)
READ_ERRORS = (httpx.HTTPError, OSError)

Predicate = Callable[[Event], bool]


class EventWaiter:
    """Hands each event matching `event_filter` to whoever waits for it, once, missing none."""

    def __init__(
        self,
        event_filter: EventFilter,
        since: datetime,
        keep: Predicate = lambda event: True,
        reread_seconds: float = 5.0,
        reread_overlap: timedelta = timedelta(seconds=30),
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        """Args:
        since: the oldest `occurred` worth reading (the caller's start, less clock skew).
        keep: which events to remember; the others are dropped on arrival.
        reread_overlap: how far each re-read reaches back before the previous one, to cover
            events stored late (batching) or stamped by a slightly slow clock.
        """
        self._filter = event_filter
        self._since = since
        self._keep = keep
        self._reread_seconds = reread_seconds
        self._reread_overlap = reread_overlap
        self._logger = logger or get_logger(__name__)
        self._events: dict[UUID, Event] = {}
        self._waiting: list[tuple[Predicate, asyncio.Future[Event | None]]] = []
        self._next_read_since = since
        self._read_lock = asyncio.Lock()
        self._read_now = asyncio.Event()
        self._stopped = False
        self._failure: BaseException | None = None
        self._client: PrefectClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> EventWaiter:
        self._client = await get_client().__aenter__()
        self._tasks = [asyncio.create_task(self._follow_stream()), asyncio.create_task(self._reread())]
        for task in self._tasks:
            task.add_done_callback(self._on_background_end)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client:
            await self._client.__aexit__(None, None, None)

    @property
    def events(self) -> list[Event]:
        """Every kept event seen so far, in the order it arrived."""
        return list(self._events.values())

    @property
    def failure(self) -> BaseException | None:
        """The error that ended the waiter's background work, if one did (waits raise it too)."""
        return self._failure

    def matching(self, predicate: Predicate) -> list[Event]:
        return [event for event in self._events.values() if predicate(event)]

    async def wait_for(self, predicate: Predicate, timeout: float) -> Event | None:
        """The first event satisfying `predicate`; None when `timeout` seconds pass or the waiter stops.

        Before answering None for a timeout it reads the stored events once more, so a verdict of
        "missing" never rests on the live stream alone.
        """
        future: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiting.append(entry)
        try:
            if self._failure:
                raise self._failure
            found = self._first(predicate)
            if found or self._stopped:
                return found
            try:
                return await asyncio.wait_for(future, max(timeout, 0))
            except TimeoutError:
                await self.catch_up()
                return self._first(predicate)
        finally:
            self._waiting.remove(entry)

    def stop(self) -> None:
        """Stop waiting: every pending `wait_for` returns None now."""
        self._stopped = True
        for _, future in self._waiting:
            if not future.done():
                future.set_result(None)

    async def catch_up(self) -> None:
        """Read the events stored since the previous read (less the overlap), page by page."""
        async with self._read_lock:
            started = datetime.now(UTC)
            read_filter = self._filter.model_copy(
                update={
                    "occurred": EventOccurredFilter(
                        since=self._next_read_since, until=started + timedelta(days=1)
                    ),
                    "order": EventOrder.ASC,
                }
            )
            assert self._client, "use EventWaiter in `async with`"
            try:
                page = await self._client.read_events(filter=read_filter, limit=PAGE_SIZE)
                while True:
                    for event in page.events:
                        self._accept(event)
                    if not page.next_page:
                        break
                    page = await self._client.read_events_page(page.next_page)
            except READ_ERRORS as error:
                self._logger.warning(
                    "Could not read stored events (%s); trying again within %g s", error, self._reread_seconds
                )
                return
            self._next_read_since = max(self._since, started - self._reread_overlap)

    def _first(self, predicate: Predicate) -> Event | None:
        return next((event for event in self._events.values() if predicate(event)), None)

    def _accept(self, event: Event) -> None:
        if event.id in self._events or not self._keep(event):
            return
        self._events[event.id] = event
        for predicate, future in self._waiting:
            if not future.done() and predicate(event):
                future.set_result(event)

    async def _follow_stream(self) -> None:
        delay = 0.5
        while True:
            try:
                # The SDK rewrites the filter's `occurred` on connect: give it a copy. It must
                # not retry by itself either, or a drop would pass without a re-read.
                subscriber = get_events_subscriber(filter=self._filter.model_copy(), reconnection_attempts=0)
                async with subscriber:
                    self._read_now.set()
                    delay = 0.5
                    async for event in subscriber:
                        self._accept(event)
                reason = "the server closed it"
            except STREAM_ERRORS as error:
                reason = f"{type(error).__name__}: {error}"
            self._logger.warning("Lost the event stream (%s); reconnecting in %.1f s", reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _reread(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._read_now.wait(), self._reread_seconds)
            except TimeoutError:
                pass
            self._read_now.clear()
            await self.catch_up()

    def _on_background_end(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # An error nobody can retry (e.g. the server refused our credentials): fail the waits
        # loudly instead of letting them run into their deadlines.
        self._failure = task.exception()
        for _, future in self._waiting:
            if not future.done():
                future.set_exception(self._failure)
