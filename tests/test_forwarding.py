"""Nothing the gateway accepts is lost or doubled: Prefect outages, gateway crashes and restarts, bursts."""

import asyncio
import signal
import sqlite3
import uuid
from datetime import datetime, timedelta

import httpx
import pytest

from devstack.prefect_queries.events import wait_for_events
from devstack.supervision.processes import ServiceError, free_port, wait_until


def summaries(count: int) -> list[dict]:
    run = uuid.uuid4()
    return [{"totalRecordsSent": n, "trackingId": f"T-{run}-{n}"} for n in range(count)]


def post_all(url: str, bodies: list[dict], concurrency: int = 16) -> list[int]:
    """POST every body (with its trackingId as Idempotency-Key), `concurrency` at a time; the status codes."""

    async def post_all_async() -> list[int]:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=30) as client:

            async def post(body: dict) -> int:
                async with limit:
                    response = await client.post(
                        url, json=body, headers={"Idempotency-Key": body["trackingId"]}
                    )
                    return response.status_code

            return await asyncio.gather(*(post(body) for body in bodies))

    return asyncio.run(post_all_async())


def stored_summaries(api_url: str, bodies: list[dict], timeout: float = 90) -> list[dict]:
    """Wait until every body's Summary event is in Prefect; return all Summary events for them."""
    tracking_ids = [body["trackingId"] for body in bodies]
    return wait_for_events(
        api_url, len(bodies), ["Summary"], {"labels": {"trackingId": tracking_ids}}, timeout=timeout
    )


def assert_each_exactly_once(events: list[dict], bodies: list[dict]) -> None:
    assert len({event["id"] for event in events}) == len(events)
    assert sorted(event["resource"]["trackingId"] for event in events) == sorted(
        body["trackingId"] for body in bodies
    )


@pytest.mark.parametrize("in_flight", [1, 4])
def test_webhooks_accepted_while_prefect_is_down_arrive_exactly_once_after_it_restarts(
    start_prefect_server, start_gateway, in_flight
):
    server = start_prefect_server()
    gateway = start_gateway(server.api_url, options=["--max-in-flight", str(in_flight), "--batch-size", "20"])
    server.stop()
    bodies = summaries(200)
    assert set(post_all(gateway.hook_url("summary"), bodies)) == {204}
    # Senders retry: some deliveries arrive twice while the first copy is still queued.
    assert set(post_all(gateway.hook_url("summary"), bodies[:20])) == {204}
    health = gateway.health()
    assert (health["queued"], health["prefect_reachable"]) == (200, False)
    assert "cannot reach Prefect" in health["last_forward_error"]

    server.start()
    assert_each_exactly_once(stored_summaries(server.api_url, bodies), bodies)
    wait_until(lambda: gateway.health()["queued"] == 0, 30, "the gateway's queue to empty")


def test_a_queue_filled_for_one_prefect_goes_to_another_only_when_told_after_a_crash(
    start_gateway, prefect_server
):
    unreachable = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    gateway = start_gateway(unreachable)
    bodies = summaries(50)
    assert set(post_all(gateway.hook_url("summary"), bodies)) == {204}
    gateway.stop(signal.SIGKILL)

    gateway.api_url = prefect_server.api_url
    with pytest.raises(
        ServiceError,
        match=f"holds 50 events accepted for the Prefect API {unreachable}, not {prefect_server.api_url}",
    ):
        gateway.start()
    gateway.options.append("--rebind-queue")
    gateway.start()
    assert_each_exactly_once(stored_summaries(prefect_server.api_url, bodies), bodies)


def test_shutdown_forwards_what_it_can_and_keeps_the_rest_for_the_next_start(start_gateway, prefect_server):
    # 20 events/s for a 5 s drain cannot forward 200 events: some must wait for the next start.
    gateway = start_gateway(
        prefect_server.api_url, options=["--max-events-per-second", "20", "--batch-size", "5"]
    )
    bodies = summaries(200)
    assert set(post_all(gateway.hook_url("summary"), bodies)) == {204}
    gateway.stop()
    with sqlite3.connect(gateway.data_dir / "outbox.sqlite3") as outbox:
        (queued,) = outbox.execute("SELECT count(*) FROM queued").fetchone()
    assert 0 < queued < 200
    # Prefect has the rest. Only a batch Prefect had not answered within the shutdown grace could
    # be in both places (it is sent again at the next start, and Prefect keeps one copy).
    forwarded = wait_for_events(
        prefect_server.api_url,
        200 - queued,
        ["Summary"],
        {"labels": {"trackingId": [b["trackingId"] for b in bodies]}},
    )
    assert 200 - queued <= len(forwarded) <= 200 - queued + 5

    gateway.start()
    assert_each_exactly_once(stored_summaries(prefect_server.api_url, bodies), bodies)


@pytest.mark.parametrize("in_flight", [1, 4])
def test_a_burst_far_above_the_ceiling_drains_under_it_and_loses_nothing(
    start_gateway, prefect_server, in_flight
):
    ceiling, batch_size = 40, 10
    options = [
        "--max-events-per-second",
        str(ceiling),
        "--batch-size",
        str(batch_size),
        "--max-in-flight",
        str(in_flight),
    ]
    gateway = start_gateway(prefect_server.api_url, options=options)
    bodies = summaries(240)
    assert set(post_all(gateway.hook_url("summary"), bodies, concurrency=32)) == {204}
    events = stored_summaries(prefect_server.api_url, bodies)
    assert_each_exactly_once(events, bodies)
    # Prefect stamps `received` as each POST arrives: no second may hold more than the ceiling
    # allows (plus a batch either side for network jitter). Unpaced, the burst lands at once.
    received = sorted(datetime.fromisoformat(event["received"]) for event in events)
    busiest = max(sum(1 for t in received if start <= t < start + timedelta(seconds=1)) for start in received)
    assert busiest <= ceiling + 2 * batch_size, f"{busiest} events reached Prefect within one second"
