"""The gateway's queue on a real SQLite file, and the forwarder taking it to a real Prefect server."""

import asyncio
import sqlite3
import time
import uuid
from datetime import UTC, datetime

import pytest

from devstack.prefect_queries.events import wait_for_events
from webhooks.forwarder import Forwarder
from webhooks.outbox import KeyReused, Outbox, OutboxFull, QueueBoundElsewhere, bind_queue


def summary(tracking: str, **changes) -> dict:
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "Summary",
        "resource": {"prefect.resource.id": "prefect.webhook.summary", "trackingId": tracking},
        "payload": {},
    }
    return {**event, **changes}


def test_an_id_already_queued_or_delivered_is_not_queued_again(tmp_path):
    async def scenario() -> list[int]:
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        await outbox.open()
        first, second = summary("T-1"), summary("T-2")
        await outbox.put([first, first])
        await outbox.put([first, second])
        counts = [(await outbox.stats()).queued]
        await outbox.delivered(await outbox.next_batch(10))
        await outbox.put([first, second, summary("T-3")])  # redelivered after forwarding, plus a new one
        counts.append((await outbox.stats()).queued)
        await outbox.close()
        return counts

    assert asyncio.run(scenario()) == [2, 1]


def test_queued_events_are_still_there_after_reopening(tmp_path):
    events = [summary(f"T-{n}") for n in range(3)]

    async def put_then_reopen() -> list[str]:
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        await outbox.open()
        await outbox.put(events)
        await outbox.close()
        reopened = Outbox(tmp_path / "outbox.sqlite3")
        stats = await reopened.open()
        assert stats.queued == 3 and stats.oldest_queued_seconds is not None
        ids = [item.id for item in await reopened.next_batch(10)]
        await reopened.close()
        return ids

    assert asyncio.run(put_then_reopen()) == [event["id"] for event in events]


def test_an_event_prefect_refuses_is_set_aside_and_the_others_still_arrive(tmp_path, prefect_server):
    run = uuid.uuid4()
    good = [summary(f"T-{run}-{n}") for n in range(4)]
    # Prefect's 422 echoes the whole request: a secret copied into a payload must not reach logs or /health.
    refused = summary(
        f"T-{run}-refused", resource={"trackingId": "no resource id"}, payload={"cookie": "s3cret"}
    )

    async def forward() -> tuple[int, int, str | None]:
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        await outbox.open()
        forwarder = Forwarder(outbox, prefect_server.api_url, max_events_per_second=100, batch_size=10)
        forwarder.start()
        await outbox.put([good[0], good[1], refused, good[2], good[3]])
        deadline = time.monotonic() + 30
        while (await outbox.stats()).queued and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await forwarder.stop(drain_seconds=1)
        stats = await outbox.stats()
        await outbox.close()
        return stats.queued, stats.rejected, forwarder.last_error

    queued, rejected, last_error = asyncio.run(forward())
    assert (queued, rejected) == (0, 1)
    assert (
        f"Prefect refused event {refused['id']} (422): body.0.resource: Value error, Resources must include"
        in last_error
    )
    assert "s3cret" not in last_error
    tracking_ids = [event["resource"]["trackingId"] for event in good]
    stored = wait_for_events(prefect_server.api_url, 4, ["Summary"], {"labels": {"trackingId": tracking_ids}})
    assert sorted(event["id"] for event in stored) == sorted(event["id"] for event in good)


async def opened(path) -> Outbox:
    outbox = Outbox(path)
    await outbox.open()
    return outbox


def test_a_key_that_comes_again_with_other_content_is_a_new_event_or_refused_when_strict(tmp_path):
    async def scenario() -> tuple[list[str], list[str], int]:
        outbox = await opened(tmp_path / "outbox.sqlite3")
        first, changed, refused = summary("T-1"), summary("T-2"), summary("T-3")
        assert await outbox.put([first], {first["id"]: "key-1"}) == []
        reused = await outbox.put([changed], {changed["id"]: "key-1"})
        await outbox.delivered(await outbox.next_batch(10))
        # Still known once forwarded: the delivered table keeps the key as long as the id.
        with pytest.raises(KeyReused):
            await outbox.put([refused], {refused["id"]: "key-1"}, strict=True)
        again = await outbox.put([first], {first["id"]: "key-1"}, strict=True)  # a true redelivery
        queued = (await outbox.stats()).queued
        await outbox.close()
        return reused, again, queued

    reused, again, queued = asyncio.run(scenario())
    assert reused and again == [] and queued == 0


def test_a_full_queue_refuses_more_and_takes_them_once_there_is_room(tmp_path):
    async def scenario() -> None:
        events = [summary(f"T-{n}", payload={"padding": "x" * 1000}) for n in range(3)]
        outbox = Outbox(tmp_path / "outbox.sqlite3", max_queued_bytes=2500)
        await outbox.open()
        await outbox.put(events[:2])
        with pytest.raises(OutboxFull):
            await outbox.put(events[2:])
        await outbox.delivered(await outbox.next_batch(1))
        await outbox.put(events[2:])
        assert (await outbox.stats()).queued == 2
        await outbox.close()

    asyncio.run(scenario())


def test_a_batch_is_bounded_in_bytes_but_holds_at_least_one_event(tmp_path):
    async def scenario() -> list[int]:
        outbox = await opened(tmp_path / "outbox.sqlite3")
        await outbox.put([summary(f"T-{n}", payload={"padding": "x" * 1000}) for n in range(5)])
        sizes = [len(await outbox.next_batch(10, max_bytes=max_bytes)) for max_bytes in (2500, 10, None)]
        await outbox.close()
        return sizes

    assert asyncio.run(scenario()) == [2, 1, 5]


def test_a_queue_holding_events_for_one_prefect_api_is_not_opened_for_another(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    assert bind_queue(path, "http://a/api") is None

    async def fill() -> None:
        outbox = await opened(path)
        await outbox.put([summary("T-1")])
        await outbox.close()

    asyncio.run(fill())
    with pytest.raises(
        QueueBoundElsewhere,
        match=r"holds 1 events accepted for the Prefect API http://a/api, not http://b/api",
    ):
        bind_queue(path, "http://b/api")
    assert bind_queue(path, "http://b/api", rebind=True) == "http://a/api"
    assert bind_queue(path, "http://b/api") is None


def test_a_queue_written_by_the_first_release_opens_with_its_events(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    event = summary("T-old")
    with sqlite3.connect(path) as old:
        old.executescript(
            "CREATE TABLE queued (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
            "event BLOB NOT NULL, queued_at REAL NOT NULL);"
            "CREATE TABLE delivered (id TEXT PRIMARY KEY, delivered_at REAL NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE rejected "
            "(id TEXT NOT NULL, event BLOB NOT NULL, error TEXT NOT NULL, rejected_at REAL NOT NULL);"
        )
        old.execute(
            "INSERT INTO queued (id, event, queued_at) VALUES (?, ?, ?)", (event["id"], b"{}", time.time())
        )
    old.close()

    async def reopen() -> list[str]:
        outbox = await opened(path)
        ids = [item.id for item in await outbox.next_batch(10)]
        await outbox.delivered(await outbox.next_batch(10))
        await outbox.close()
        return ids

    assert asyncio.run(reopen()) == [event["id"]]


def test_a_full_disk_right_after_prefect_took_a_batch_pauses_forwarding_and_loses_nothing(
    tmp_path, prefect_server
):
    run = uuid.uuid4()
    events = [summary(f"T-{run}-{n}") for n in range(200)]

    async def forward() -> tuple[int, str | None, int]:
        outbox = await opened(tmp_path / "outbox.sqlite3")
        await outbox.put(events)
        # The disk fills: SQLite cannot grow the file to remember the deliveries ("database or disk is full").
        (pages,) = await outbox._run(lambda: outbox._database.execute("PRAGMA page_count").fetchone())
        await outbox._run(lambda: outbox._database.execute(f"PRAGMA max_page_count = {pages}"))
        forwarder = Forwarder(outbox, prefect_server.api_url, max_events_per_second=1000, batch_size=200)
        forwarder.start()
        deadline = time.monotonic() + 30
        while forwarder.restarts < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        restarts, error = forwarder.restarts, forwarder.last_error
        await outbox._run(
            lambda: outbox._database.execute("PRAGMA max_page_count = 1073741823")
        )  # room again
        while (await outbox.stats()).queued and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await forwarder.stop(drain_seconds=1)
        queued = (await outbox.stats()).queued
        await outbox.close()
        return restarts, error, queued

    restarts, error, queued = asyncio.run(forward())
    assert restarts >= 2 and "database or disk is full" in error
    assert queued == 0
    tracking_ids = [event["resource"]["trackingId"] for event in events]
    stored = wait_for_events(
        prefect_server.api_url, 200, ["Summary"], {"labels": {"trackingId": tracking_ids}}
    )
    assert sorted(event["id"] for event in stored) == sorted(event["id"] for event in events)
