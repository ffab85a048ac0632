"""EventWaiter against a real Prefect server that stores events late, through a relay we can cut."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_URL, temporary_settings

from devstack.prefect_queries.events import read_events
from devstack.prefect_queries.pipeline_events import post_events
from devstack.supervision.processes import free_port, wait_until
from prefect_flows.event_waiter import EventWaiter

pytestmark = pytest.mark.anyio
FLUSH_SECONDS = 3


@pytest.fixture(scope="module")
def slow_server(start_prefect_server):
    """A private server whose event persister flushes every 3 s, as a busy one may."""
    server = start_prefect_server(
        extra_env={"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": str(FLUSH_SECONDS)}
    )
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server


@pytest.fixture
def name() -> str:
    """An event name of this test's own, so tests never see each other's events."""
    return f"waiter-test.{uuid.uuid4().hex}"


def make_events(name: str, count: int) -> list[dict]:
    occurred = datetime.now(UTC).isoformat()
    return [
        {
            "id": str(uuid.uuid4()),
            "occurred": occurred,
            "event": name,
            "resource": {"prefect.resource.id": f"test.thing.{n}"},
        }
        for n in range(count)
    ]


def waiter_for(name: str, **options) -> EventWaiter:
    since = datetime.now(UTC) - timedelta(minutes=1)
    return EventWaiter(EventFilter(event=EventNameFilter(name=[name])), since=since, **options)


def stored(api_url: str, name: str, count: int) -> None:
    wait_until(lambda: len(read_events(api_url, [name])) >= count, 30, f"{count} {name} events to be stored")


def with_id(event_id: str):
    return lambda event: str(event.id) == event_id


async def assert_streaming(waiter: EventWaiter, api_url: str, name: str) -> None:
    """Post probe events until one streams in (the server registers a subscription a moment after
    the client sent it, so the first probes may slip past)."""
    for _ in range(20):
        probe = make_events(name, 1)[0]
        post_events(api_url, [probe])
        if await waiter.wait_for(with_id(probe["id"]), timeout=1.5):
            return
    raise AssertionError("no probe event streamed in within 20 tries")


class TcpRelay:
    """A loopback relay to a port that can be cut like a network: open connections drop, new ones fail."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._relays.add(asyncio.current_task())  # type: ignore[arg-type]  # called in a task
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers |= {writer, upstream_writer}
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        finally:
            self._relays.discard(asyncio.current_task())

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def test_every_page_of_events_stored_before_waiting_is_handed_over(slow_server, name):
    events = make_events(name, 120)
    post_events(slow_server.api_url, events)
    stored(slow_server.api_url, name, 120)
    async with waiter_for(name) as waiter:
        assert await waiter.wait_for(with_id(events[-1]["id"]), timeout=20)
        await waiter.catch_up()
        assert sorted(str(event.id) for event in waiter.events) == sorted(event["id"] for event in events)


async def test_an_event_streamed_while_waiting_is_handed_over_once(slow_server, name):
    async with waiter_for(name, reread_seconds=3600) as waiter:
        await assert_streaming(waiter, slow_server.api_url, name)
        event = make_events(name, 1)[0]
        waiting = asyncio.create_task(waiter.wait_for(with_id(event["id"]), timeout=30))
        post_events(slow_server.api_url, [event])
        post_events(slow_server.api_url, [event])  # a redelivery: same id
        assert str((await waiting).id) == event["id"]
        stored(slow_server.api_url, name, len(waiter.events))
        await waiter.catch_up()
        assert [str(seen.id) for seen in waiter.events].count(event["id"]) == 1


async def test_an_event_published_just_before_subscribing_and_stored_later_is_found_by_a_reread(
    slow_server, name
):
    # Published before the subscription exists, so not streamed; stored up to 3 s later, so not
    # in the first read either. Only a later read can find it.
    event = make_events(name, 1)[0]
    post_events(slow_server.api_url, [event])
    async with waiter_for(name, reread_seconds=1) as waiter:
        found = await waiter.wait_for(with_id(event["id"]), timeout=FLUSH_SECONDS * 4)
    assert found is not None and str(found.id) == event["id"]


async def test_events_sent_while_the_stream_is_cut_are_seen_after_it_reconnects(slow_server, name, caplog):
    relay = TcpRelay(slow_server.port)
    await relay.start()
    logger = logging.getLogger("test-event-waiter")
    during_cut = make_events(name, 1)[0]
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{relay.port}/api"}):
        # No periodic re-reads: what is seen after the cut comes from reconnecting.
        async with waiter_for(name, reread_seconds=3600, logger=logger) as waiter:
            await assert_streaming(waiter, slow_server.api_url, name)
            with caplog.at_level(logging.WARNING, logger="test-event-waiter"):
                await relay.cut()
                post_events(slow_server.api_url, [during_cut])
                await asyncio.to_thread(stored, slow_server.api_url, name, len(waiter.events) + 1)
                await relay.start()
                assert await waiter.wait_for(with_id(during_cut["id"]), timeout=30)
            await assert_streaming(waiter, slow_server.api_url, name)
    await relay.cut()
    assert "Lost the event stream" in caplog.text


async def test_waiting_ends_with_none_at_the_timeout_or_when_stopped(slow_server, name):
    async with waiter_for(name) as waiter:
        assert await waiter.wait_for(with_id("never"), timeout=0.5) is None
        waiting = asyncio.create_task(waiter.wait_for(with_id("never"), timeout=60))
        await asyncio.sleep(0)
        waiter.stop()
        assert await asyncio.wait_for(waiting, 5) is None


async def test_an_error_in_the_background_fails_the_waits_at_once_instead_of_at_their_timeout(
    slow_server, name
):
    def broken(event) -> bool:
        raise LookupError("the predicate has a bug")

    event = make_events(name, 1)[0]
    post_events(slow_server.api_url, [event])
    async with waiter_for(name, keep=broken, reread_seconds=0.5) as waiter:
        with pytest.raises(LookupError, match="the predicate has a bug"):
            await waiter.wait_for(with_id(event["id"]), timeout=60)
        assert isinstance(waiter.failure, LookupError)
