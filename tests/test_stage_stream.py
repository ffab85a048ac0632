"""StageEventStream against a real Prefect server that stores events late, through a relay we can cut."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from devstack.prefect_queries import pipeline_events as events
from devstack.prefect_queries.events import read_events
from devstack.prefect_queries.pipeline_events import post_events
from devstack.supervision.processes import free_port, wait_until
from prefect_flows.stage_stream import StageEventStream, StopReason
from prefect_flows.stages import BLOB_CREATED, RECONCILIATION, STAGES, SUMMARY, TRANSFER, TrackedFile

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


def new_file(folder: str = "") -> TrackedFile:
    """A file of this test's own: its trackingId and name are seen by no other test."""
    return TrackedFile(f"{folder}{uuid.uuid4().hex[:12]}.csv", str(uuid.uuid4()))


def journey(file: TrackedFile, sent: int = 5, received: int = 5) -> list[dict]:
    return events.stages(file.file_name, file.tracking_id, sent, received)


def stream_from(minutes_ago: float = 1, **options) -> StageEventStream:
    return StageEventStream(since=datetime.now(UTC) - timedelta(minutes=minutes_ago), **options)


def watching(stream: StageEventStream, file: TrackedFile, minutes_ago: float = 1, run_id: str | None = None):
    return stream.watch(file, datetime.now(UTC) - timedelta(minutes=minutes_ago), run_id)


def stored(api_url: str, count: int, tracking_ids: list[str]) -> None:
    def found() -> bool:
        return (
            len(
                read_events(
                    api_url,
                    ["transfer", "Summary", "Reconciliation"],
                    {"labels": {"trackingId": tracking_ids}},
                )
            )
            >= count
        )

    wait_until(found, 30, f"{count} events of {len(tracking_ids)} files to be stored")


def proof_ids(watch) -> dict[str, list[str]]:
    return {stage.event: [str(event.id) for event in watch.proofs(stage)] for stage in STAGES}


async def assert_streaming(stream: StageEventStream, api_url: str) -> None:
    """Post probe files until one's transfer streams in (the server registers a subscription a
    moment after the client sent it, so the first probes may slip past)."""
    for _ in range(20):
        probe = new_file()
        async with watching(stream, probe) as watch:
            post_events(api_url, journey(probe)[:1])
            if await watch.wait_for(TRANSFER, timeout=1.5):
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


async def test_every_page_of_events_stored_before_watching_is_handed_over(slow_server):
    files = [new_file() for _ in range(30)]
    journeys = {file: journey(file) for file in files}
    post_events(slow_server.api_url, [event for posted in journeys.values() for event in posted])
    stored(slow_server.api_url, 90, [file.tracking_id for file in files])
    async with stream_from() as stream:
        for file in files:
            async with watching(stream, file) as watch:
                assert await watch.wait_for(RECONCILIATION, timeout=20)
                assert proof_ids(watch) == {event["event"]: [event["id"]] for event in journeys[file]}


async def test_each_of_many_files_on_one_stream_gets_its_own_events_and_no_others(slow_server):
    files = [new_file(folder="2026/11/" if n % 2 else "") for n in range(40)]
    journeys = {file: journey(file, sent=n, received=n) for n, file in enumerate(files)}
    async with stream_from() as stream:
        await assert_streaming(stream, slow_server.api_url)
        async with contextlib.AsyncExitStack() as stack:
            watches = {file: await stack.enter_async_context(watching(stream, file)) for file in files}
            interleaved = [journeys[file][stage] for stage in range(4) for file in files]
            post_events(slow_server.api_url, interleaved)
            for file, watch in watches.items():
                assert await watch.wait_for(RECONCILIATION, timeout=30)
                assert await watch.wait_for(BLOB_CREATED, timeout=30)
                assert proof_ids(watch) == {event["event"]: [event["id"]] for event in journeys[file]}


async def test_an_event_streamed_while_waiting_is_handed_over_once(slow_server):
    file = new_file()
    summary = journey(file)[2]
    async with stream_from(reread_seconds=3600) as stream:
        await assert_streaming(stream, slow_server.api_url)
        async with watching(stream, file) as watch:
            waiting = asyncio.create_task(watch.wait_for(SUMMARY, timeout=30))
            post_events(slow_server.api_url, [summary])
            post_events(slow_server.api_url, [summary])  # a redelivery: same id
            assert str((await waiting).id) == summary["id"]
            stored(slow_server.api_url, 1, [file.tracking_id])
            await stream.catch_up()
            assert proof_ids(watch)[SUMMARY.event] == [summary["id"]]


async def test_an_event_published_just_before_subscribing_and_stored_later_is_found_by_a_reread(slow_server):
    # Published before the subscription exists, so not streamed; stored up to 3 s later, so not
    # in the first read either. Only a later read can find it.
    file = new_file()
    transfer = journey(file)[0]
    post_events(slow_server.api_url, [transfer])
    async with stream_from(reread_seconds=1) as stream, watching(stream, file) as watch:
        found = await watch.wait_for(TRANSFER, timeout=FLUSH_SECONDS * 4)
    assert found is not None and str(found.id) == transfer["id"]


async def test_a_file_watched_long_after_its_kickoff_sees_what_happened_before_the_stream_began(slow_server):
    file = new_file()
    old = [events.shifted(event, -1800) for event in journey(file)]  # 30 minutes ago
    post_events(slow_server.api_url, old)
    stored(slow_server.api_url, 3, [file.tracking_id])
    async with stream_from(minutes_ago=1) as stream:
        async with watching(stream, file, minutes_ago=31) as watch:
            assert proof_ids(watch) == {event["event"]: [event["id"]] for event in old}
        async with watching(stream, new_file(), minutes_ago=1) as other:
            assert not any(proof_ids(other).values())


async def test_events_sent_while_the_stream_is_cut_are_seen_after_it_reconnects(slow_server, caplog):
    relay = TcpRelay(slow_server.port)
    await relay.start()
    logger = logging.getLogger("test-stage-stream")
    file = new_file()
    during_cut = journey(file)[2]
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{relay.port}/api"}):
        # No periodic re-reads: what is seen after the cut comes from reconnecting.
        async with stream_from(reread_seconds=3600, logger=logger) as stream:
            await assert_streaming(stream, slow_server.api_url)
            async with watching(stream, file) as watch:
                with caplog.at_level(logging.WARNING, logger="test-stage-stream"):
                    await relay.cut()
                    post_events(slow_server.api_url, [during_cut])
                    await asyncio.to_thread(stored, slow_server.api_url, 1, [file.tracking_id])
                    await relay.start()
                    assert await watch.wait_for(SUMMARY, timeout=30)
            await assert_streaming(stream, slow_server.api_url)
    await relay.cut()
    assert "Lost the event stream" in caplog.text


async def test_waiting_ends_with_none_at_the_timeout_or_when_stopped(slow_server):
    async with stream_from() as stream, watching(stream, new_file(), run_id="run-1") as watch:
        assert await watch.wait_for(TRANSFER, timeout=0.5) is None
        waiting = asyncio.create_task(watch.wait_for(SUMMARY, timeout=60))
        await asyncio.sleep(0)
        stream.stop_run("run-1", StopReason.CANCELLED, "the run was cancelled")
        assert await asyncio.wait_for(waiting, 5) is None
        assert (watch.stopped, watch.stop_message) == (StopReason.CANCELLED, "the run was cancelled")


async def test_a_run_stopped_before_it_watches_stops_as_soon_as_it_does(slow_server):
    async with stream_from() as stream:
        stream.stop_run("run-2", StopReason.CANCELLED, "cancelled while starting")
        async with watching(stream, new_file(), run_id="run-2") as watch:
            assert watch.stopped == StopReason.CANCELLED
            assert await watch.wait_for(TRANSFER, timeout=60) is None


async def test_an_error_in_the_background_fails_the_waits_at_once_instead_of_at_their_timeout(slow_server):
    file = new_file()

    def broken(event) -> None:
        if event.resource.get("trackingId") == file.tracking_id:
            raise LookupError("the event handler has a bug")

    post_events(slow_server.api_url, journey(file)[:1])
    async with stream_from(on_event=broken, reread_seconds=0.5) as stream, watching(stream, file) as watch:
        with pytest.raises(LookupError, match="the event handler has a bug"):
            await watch.wait_for(SUMMARY, timeout=60)
        assert isinstance(stream.failure, LookupError)
