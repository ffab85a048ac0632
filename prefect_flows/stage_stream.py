"""One stream of stage events for every file a process follows, missing none.

Prefect's subscriber alone loses events: it backfills only the last minute, an event published
just before it connects is neither streamed nor yet stored (events reach the database in
batches), a websocket drop opens a gap, and the server drops events for a subscriber that falls
256 behind. So the stream subscribes first, then reads what the server stored (paging at 50, the
server's maximum), and reads again after every reconnect and every `reread_seconds`; each event
is taken once, by id.

However many files wait, the process holds one subscription and one periodic read: each event is
routed to the files waiting for it by a dictionary lookup on its trackingId, or on the blob name
for `Microsoft.Storage.BlobCreated` (Event Grid knows blobs, not trackingIds). Events stay held
for as long as a file that may need them is followed, so a file whose run starts late (a busy
server, a restart) still sees what happened since its kickoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder
from prefect.events.schemas.events import Event
from prefect.logging import get_logger, get_run_logger
from websockets.exceptions import WebSocketException

from prefect_flows.stages import (
    BLOB_CREATED,
    STAGE_EVENTS,
    STAGES,
    Stage,
    TrackedFile,
    blob_url_path,
    last_part,
)

# The events filter API answers 422 above 50 events per page.
PAGE_SIZE = 50
STREAM_ERRORS = (WebSocketException, OSError, TimeoutError)
READ_ERRORS = (httpx.HTTPError, OSError)
# How often what is held for files is pruned: each pruning looks at every file, and thousands wait.
FORGET_EVERY = timedelta(minutes=1)


class StopReason:
    """Why a file stopped waiting before all its stages were seen."""

    OVERDUE = "overdue"  # another stage passed its deadline
    CANCELLED = "cancelled"  # someone cancelled the run


class FileWatch:
    """One file's view of the stream: the events that prove its stages, and waits for the missing ones."""

    def __init__(self, file: TrackedFile, since: datetime, catch_up: Callable[[], Awaitable[object]]) -> None:
        self.file = file
        self.since = since
        self.stopped: str | None = None
        self.stop_message = ""
        self._proofs: dict[Stage, dict[UUID, Event]] = {stage: {} for stage in STAGES}
        self._waiting: dict[Stage, list[asyncio.Future[Event | None]]] = defaultdict(list)
        self._failure: BaseException | None = None
        self._catch_up = catch_up

    def proofs(self, stage: Stage) -> list[Event]:
        """Every distinct event seen so far that proves `stage` for this file, in arrival order."""
        return list(self._proofs[stage].values())

    async def wait_for(self, stage: Stage, timeout: float) -> Event | None:
        """The first event proving `stage`; None when `timeout` seconds pass or the watch stops.

        Before answering None for a timeout it reads the stored events once more, so a verdict of
        "missing" never rests on the live stream alone.
        """
        if self._failure:
            raise self._failure
        if found := self.proofs(stage):
            return found[0]
        if self.stopped:
            return None
        future: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        self._waiting[stage].append(future)
        try:
            return await asyncio.wait_for(future, max(timeout, 0))
        except TimeoutError:
            pass
        finally:
            self._waiting[stage].remove(future)
        await self._catch_up()
        return next(iter(self.proofs(stage)), None)

    def stop(self, reason: str, message: str = "") -> None:
        """Stop waiting: every pending `wait_for` returns None now (the first reason given is kept)."""
        if not self.stopped:
            self.stopped, self.stop_message = reason, message
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def offer(self, event: Event) -> None:
        if event.occurred < self.since:
            return
        for stage in STAGES:
            if self.file.proves(stage, event):
                self._proofs[stage].setdefault(event.id, event)
                for future in self._waiting[stage]:
                    if not future.done():
                        future.set_result(event)

    def fail(self, error: BaseException) -> None:
        self._failure = error
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)


def occurred_since(since: datetime) -> EventOccurredFilter:
    """Events that occurred from `since` on, however far ahead a sender's clock runs."""
    return EventOccurredFilter.model_validate(
        {"since": since, "until": datetime.now(UTC) + timedelta(days=1)}
    )


def routing_keys(event: Event) -> list[str]:
    """The keys under which files that may need `event` are found."""
    keys = []
    if tracking_id := event.resource.get("trackingId"):
        keys.append(f"trackingId:{tracking_id}")
    if event.event == BLOB_CREATED.event:
        url = event.resource.get("url") or event.resource.id
        keys.append(f"blob:{last_part(blob_url_path(url))}")
    return keys


def watch_keys(file: TrackedFile) -> list[str]:
    return [f"trackingId:{file.tracking_id}", f"blob:{last_part(file.file_name)}"]


class StageEventStream:
    """Routes every stage event the Prefect server sees to the files waiting for it, once each."""

    def __init__(
        self,
        since: datetime,
        event_names: Sequence[str] = STAGE_EVENTS,
        reread_seconds: float = 5.0,
        reread_overlap: timedelta = timedelta(seconds=30),
        retain: timedelta = timedelta(minutes=10),
        keep: Callable[[Event], bool] | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_watch: Callable[[str], None] | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        """Args:
        since: the oldest `occurred` worth reading at first (a watch from earlier reads further back).
        reread_overlap: how far each re-read reaches back before the previous one, to cover
            events stored late (batching) or stamped by a slightly slow clock.
        retain: how long events nobody waits for yet are held, for files whose runs start late.
        keep: which events to hold at all (default: every one); the others are dropped on arrival.
        on_event: called once with every new event (any of `event_names`), e.g. to spot files
            nobody announced.
        on_watch: called with a run's id when it starts watching its file.
        """
        self._filter = EventFilter(event=EventNameFilter(name=list(event_names)))
        self._reread_seconds = reread_seconds
        self._reread_overlap = reread_overlap
        self._retain = retain
        self._keep = keep
        self._on_event = on_event
        self._on_watch = on_watch
        self._logger = logger or get_logger(__name__)
        self._events: dict[UUID, Event] = {}
        self._by_key: dict[str, dict[UUID, Event]] = defaultdict(dict)
        self._watches: dict[str, set[FileWatch]] = defaultdict(set)
        self._by_run: dict[str, FileWatch] = {}
        self._stopped_runs: dict[str, tuple[str, str]] = {}
        self._held_since = since  # every stored event that occurred since this is held
        self._next_forget = datetime.now(UTC)
        self._floor = since  # events older than this are dropped on arrival
        self._next_read_since = since
        self._read_lock = asyncio.Lock()
        self._read_now = asyncio.Event()
        self._failure: BaseException | None = None
        self.reconnected_at: datetime | None = None  # when the subscription last came back after a loss
        self._client: PrefectClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> StageEventStream:
        self._client = await get_client().__aenter__()
        self._tasks = [asyncio.create_task(self._follow_stream()), asyncio.create_task(self._reread())]
        for task in self._tasks:
            task.add_done_callback(self._on_background_end)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client:
            await self._client.__aexit__(None, None, None)

    @property
    def failure(self) -> BaseException | None:
        """The error that ended the stream's background work, if one did (waits raise it too)."""
        return self._failure

    @asynccontextmanager
    async def watch(
        self, file: TrackedFile, since: datetime, flow_run_id: str | None = None
    ) -> AsyncIterator[FileWatch]:
        """Follow `file` from `since`: what happened already, then every new event, until the block ends."""
        watch = FileWatch(file, since, self.catch_up)
        if self._failure:
            watch.fail(self._failure)
        keys = watch_keys(file)
        for key in keys:
            self._watches[key].add(watch)
            for event in list(self._by_key.get(key, {}).values()):
                watch.offer(event)
        if flow_run_id is not None:
            self._by_run[flow_run_id] = watch
            if stopped := self._stopped_runs.pop(flow_run_id, None):
                watch.stop(*stopped)
            if self._on_watch:
                self._on_watch(flow_run_id)
        try:
            await self.hold_since(since)
            yield watch
        finally:
            for key in keys:
                self._watches[key].discard(watch)
                if not self._watches[key]:
                    del self._watches[key]
            if flow_run_id is not None and self._by_run.get(flow_run_id) is watch:
                del self._by_run[flow_run_id]

    def stop_run(self, flow_run_id: str, reason: str, message: str = "") -> None:
        """Stop the waits of the file that run `flow_run_id` follows, now or as soon as it starts."""
        if watch := self._by_run.get(flow_run_id):
            watch.stop(reason, message)
        else:
            self._stopped_runs[flow_run_id] = (reason, message)

    async def hold_since(self, since: datetime) -> None:
        """Hold every stored event that occurred since `since`: one read, shared by all who ask."""
        delay = 0.5
        while since < self._held_since:
            async with self._read_lock:
                if since >= self._held_since:
                    return
                self._floor = min(self._floor, since)
                self._next_read_since = min(self._next_read_since, since)
                if await self._read_stored():
                    self._held_since = min(self._held_since, since)
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reread_seconds)

    async def catch_up(self) -> None:
        """Read the events stored since the previous read (less the overlap), page by page."""
        async with self._read_lock:
            await self._read_stored()

    async def _read_stored(self) -> bool:
        """Read the stored events from `_next_read_since`; False (logged) when the server did not answer."""
        started = datetime.now(UTC)
        read_filter = self._filter.model_copy(
            update={
                "occurred": occurred_since(self._next_read_since),
                "order": EventOrder.ASC,
            }
        )
        assert self._client, "use StageEventStream in `async with`"
        try:
            page = await self._client.read_events(filter=read_filter, limit=PAGE_SIZE)
            while True:
                for event in page.events:
                    self._accept(event)
                if not page.next_page:
                    break
                page = await self._client.read_events_page(str(page.next_page))
        except READ_ERRORS as error:
            self._logger.warning(
                "Could not read stored events (%s); trying again within %g s", error, self._reread_seconds
            )
            return False
        self._next_read_since = max(self._held_since, started - self._reread_overlap)
        self._forget_old(started)
        return True

    def _accept(self, event: Event) -> None:
        if event.id in self._events or event.occurred < self._floor:
            return
        if self._keep and not self._keep(event):
            return
        self._events[event.id] = event
        for key in routing_keys(event):
            self._by_key[key][event.id] = event
            for watch in self._watches.get(key, ()):
                watch.offer(event)
        if self._on_event:
            self._on_event(event)

    def _forget_old(self, now: datetime) -> None:
        """Let go of events that no file followed now, nor one starting soon, can need."""
        if now < self._next_forget:
            return
        self._next_forget = now + FORGET_EVERY
        horizon = now - self._retain - self._reread_overlap
        for watches in self._watches.values():
            for watch in watches:
                horizon = min(horizon, watch.since)
        if horizon <= self._held_since:
            return
        self._held_since = self._floor = horizon
        old = [event for event in self._events.values() if event.occurred < horizon]
        for event in old:
            del self._events[event.id]
            for key in routing_keys(event):
                held = self._by_key.get(key)
                if held is not None:
                    held.pop(event.id, None)
                    if not held:
                        del self._by_key[key]

    async def _follow_stream(self) -> None:
        delay = 0.5
        lost = False
        while True:
            try:
                # The SDK rewrites the filter's `occurred` on connect: give it a copy. It must
                # not retry by itself either, or a drop would pass without a re-read.
                subscriber = get_events_subscriber(filter=self._filter.model_copy(), reconnection_attempts=0)
                async with subscriber:
                    if lost:
                        self.reconnected_at = datetime.now(UTC)
                    self._read_now.set()
                    delay = 0.5
                    async for event in subscriber:
                        self._accept(event)
                reason = "the server closed it"
            except STREAM_ERRORS as error:
                reason = f"{type(error).__name__}: {error}"
            lost = True
            self._logger.warning("Lost the event stream (%s); reconnecting in %.1f s", reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _reread(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._read_now.wait(), self._reread_seconds)
            self._read_now.clear()
            await self.catch_up()

    def _on_background_end(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (failure := task.exception()) is None:
            return
        # An error nobody can retry (e.g. the server refused our credentials): fail the waits
        # loudly instead of letting them run into their deadlines.
        self._failure = failure
        self._logger.error("The event stream stopped: %r", failure)
        for watches in self._watches.values():
            for watch in watches:
                watch.fail(failure)


# The stream of the serving process, when it runs flow runs as coroutines (prefect_flows/coroutine_runner.py).
SHARED_STREAM: ContextVar[StageEventStream | None] = ContextVar("shared_stage_event_stream", default=None)


@asynccontextmanager
async def following(file: TrackedFile, since: datetime, flow_run_id: str | None) -> AsyncIterator[FileWatch]:
    """Watch `file` on the serving process's shared stream, or on a stream of this run's own."""
    if shared := SHARED_STREAM.get():
        async with shared.watch(file, since, flow_run_id) as watch:
            yield watch
        return
    async with (
        StageEventStream(since, retain=timedelta(0), keep=file.concerns, logger=get_run_logger()) as own,
        own.watch(file, since, flow_run_id) as watch,
    ):
        yield watch
