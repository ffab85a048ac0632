"""The consumer stand-in, reading what the real emitter sent to Azurite and answering a real webhook.

The Function App runs through `start_relay` (its webhooks go to a recording receiver); the
consumer answers either the session's gateway, which forwards to the session's Prefect server,
or the receiver, where each request it sent can be counted.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid

import pytest

from configuration import REPO_ROOT
from devstack.prefect_queries.events import wait_for_events
from devstack.supervision.processes import wait_until
from file_relay.delivery import WebhookEndpoint
from simulators.config import read_webhook
from simulators.consumer import NO_FAULTS, Consumer, Faults, decode, records_queues
from simulators.ledger import ledger
from tests.relay_fixtures import Relay
from webhooks.catalog import load_catalog
from webhooks.provisioning import gateway_urls, sender_settings, write_env_file

RECONCILIATION = "/hooks/reconciliation"


def emit(relay: Relay, data: bytes, times: int = 1) -> str:
    """Upload `data` as ledger.csv with a new trackingId and run both functions; the trackingId.

    `times` > 1 emits the same blob version again, as a retried emission does.
    """
    tracking_id = f"T-consumer-{uuid.uuid4().hex[:8]}"
    relay.upload("ledger.csv", data, tracking_id=tracking_id)
    work_item = relay.announce("ledger.csv")["work_item"]  # queued once by the blob trigger
    for _ in range(times - 1):
        relay.emit_queue().send_message(work_item)
    for _ in range(times):
        assert relay.emit()
    return tracking_id


def consumer_for(relay: Relay, azurite, webhook: WebhookEndpoint, faults: Faults = NO_FAULTS) -> Consumer:
    queue, poison = records_queues(azurite.connection_string, relay.settings["RECORDS_QUEUE"])
    return Consumer(queue, poison, webhook, faults)


def answers(receiver) -> list[dict]:
    return [request.json() for request in receiver.to(RECONCILIATION)]


@pytest.fixture
def answer_to(receiver) -> WebhookEndpoint:
    return WebhookEndpoint("reconciliation", receiver.url(RECONCILIATION))


def test_a_file_is_reconciled_through_the_gateway_with_the_records_that_pass_the_rule(
    start_relay, azurite, gateway, prefect_server, tmp_path
):
    relay = start_relay(RECORDS_COMPRESSION="none")  # plain JSON: 6,000 records take several envelopes
    tracking_id = emit(relay, ledger(6000, malformed=3))
    env_file = tmp_path / "webhooks.env"
    write_env_file(
        env_file, sender_settings(gateway_urls(load_catalog(), gateway.host, gateway.port), environ={})
    )
    consumer = consumer_for(relay, azurite, read_webhook(env_file, "reconciliation"))
    envelopes = [decode(message.content) for message in consumer.queue.peek_messages(32)]

    assert consumer.poll() == len(envelopes)

    [event] = wait_for_events(
        prefect_server.api_url, 1, ["Reconciliation"], resource={"labels": {"trackingId": [tracking_id]}}
    )
    assert event["resource"]["totalRecordsReceived"] == "5997"
    assert len([envelope for envelope in envelopes if not envelope.get("final")]) >= 3


def test_duplicate_envelopes_are_dropped_and_the_file_is_answered_once(
    start_relay, azurite, receiver, answer_to
):
    relay = start_relay(RECORDS_COMPRESSION="none")
    tracking_id = emit(relay, ledger(6000), times=2)
    consumer = consumer_for(relay, azurite, answer_to)

    consumer.poll()
    relay.announce("ledger.csv")  # the same blob version emitted a third time, after the answer
    assert relay.emit()
    consumer.poll()

    assert answers(receiver) == [{"totalRecordsReceived": 6000, "trackingId": tracking_id}]
    assert list(consumer.queue.peek_messages()) == []


@pytest.mark.parametrize(
    ("faults", "received"),
    [
        (Faults(reject_every=10), 90),
        (Faults(reject_every=1), 0),
    ],
)
def test_reject_every_rejects_that_share_of_the_records(
    start_relay, azurite, receiver, answer_to, faults, received
):
    relay = start_relay()
    tracking_id = emit(relay, ledger(100))

    consumer_for(relay, azurite, answer_to, faults).poll()

    assert answers(receiver) == [{"totalRecordsReceived": received, "trackingId": tracking_id}]


def test_drop_every_loses_those_envelopes_and_their_records(start_relay, azurite, receiver, answer_to):
    relay = start_relay(RECORDS_COMPRESSION="none")
    emit(relay, ledger(6000))
    consumer = consumer_for(relay, azurite, answer_to, Faults(drop_every=2))
    envelopes = [decode(message.content) for message in consumer.queue.peek_messages(32)]
    kept = sum(len(e["records"]) for e in envelopes if not e.get("final") and e["seq"] % 2)

    consumer.poll()

    [answer] = answers(receiver)
    assert answer["totalRecordsReceived"] == kept < 6000


def test_a_never_answered_tracking_id_gets_no_reconciliation_and_others_do(
    start_relay, azurite, receiver, answer_to
):
    relay = start_relay()
    silent = emit(relay, ledger(5))
    consumer = consumer_for(relay, azurite, answer_to, Faults(never_answer=(silent[:-2] + "*",)))
    consumer.poll()
    assert answers(receiver) == []

    relay.upload("other.csv", ledger(4), tracking_id="T-answered")
    relay.announce("other.csv")
    relay.emit()
    consumer.poll()
    assert answers(receiver) == [{"totalRecordsReceived": 4, "trackingId": "T-answered"}]


def test_a_delayed_answer_goes_out_once_the_delay_has_passed(start_relay, azurite, receiver, answer_to):
    relay = start_relay()
    tracking_id = emit(relay, ledger(3))
    consumer = consumer_for(relay, azurite, answer_to, Faults(delay=1.0))

    consumer.poll()
    assert answers(receiver) == []

    wait_until(
        lambda: consumer.poll() >= 0 and answers(receiver), 10, "the delayed Reconciliation", interval=0.2
    )
    assert answers(receiver) == [{"totalRecordsReceived": 3, "trackingId": tracking_id}]


def test_a_message_that_is_not_an_envelope_moves_to_the_poison_queue(start_relay, azurite, answer_to):
    relay = start_relay()
    consumer = consumer_for(relay, azurite, answer_to)
    relay.records.send_message(base64.b64encode(b"not an envelope").decode())

    assert consumer.poll() == 1

    assert [m.content for m in consumer.poison.peek_messages()] == [
        base64.b64encode(b"not an envelope").decode()
    ]
    assert list(consumer.queue.peek_messages()) == []


def test_the_consumer_without_an_env_file_says_how_to_write_one(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "simulators.consumer", "--env-file", str(tmp_path / "missing.env")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "missing.env not found" in result.stderr
    assert "python -m webhooks provision --local" in result.stderr
