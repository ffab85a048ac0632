"""The gateway's queue on a real SQLite file, and the forwarder taking it to a real Prefect server."""

import asyncio
import time
import uuid
from datetime import datetime, timezone

from devstack.prefect_api import wait_for_events
from webhooks.forwarder import Forwarder
from webhooks.outbox import Outbox


def summary(tracking: str, **changes) -> dict:
    event = {
        "id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat(), "event": "Summary",
        "resource": {"prefect.resource.id": "prefect.webhook.summary", "trackingId": tracking}, "payload": {},
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
    refused = summary(f"T-{run}-refused", resource={"trackingId": "no resource id"})

    async def forward() -> tuple[int, int, str]:
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
    assert f"Prefect refused event {refused['id']} (422)" in last_error
    tracking_ids = [event["resource"]["trackingId"] for event in good]
    stored = wait_for_events(prefect_server.api_url, 4, ["Summary"], {"labels": {"trackingId": tracking_ids}})
    assert sorted(event["id"] for event in stored) == sorted(event["id"] for event in good)
