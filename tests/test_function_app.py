"""The functions function_app.py registers, run as the host runs them: on Azurite, with a real receiver."""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid

import jinja2
import pytest

from configuration import REPO_ROOT as REPO
from devstack.supervision.processes import free_port
from file_relay.announcer import MissingTrackingId
from file_relay.delivery import DeliveryError
from file_relay.emitter import EmissionError
from file_relay.envelopes import MAX_MESSAGE_BYTES
from file_relay.settings import SettingsError
from file_relay.work_item import WorkItemError
from tests.relay_fixtures import CONNECTION, decode_message

BLOB_CREATED = "/hooks/azure-storage"
SUMMARY = "/hooks/summary"

# The original Prefect Cloud example's azure-storage template: our delivery must render through it.
AZURE_STORAGE_TEMPLATE = """{ "event": "{{body[0].eventType}}", "payload": {
"topic": "{{body[0].topic}}", "subject": "{{body[0].subject}}", "eventType": "{{body[0].eventType}}",
"eventTime": "{{body[0].eventTime}}", "id": "{{body[0].id}}", "data": { "api": "{{body[0].data.api}}",
"clientRequestId": "{{body[0].data.clientRequestId}}", "requestId": "{{body[0].data.requestId}}",
"eTag": "{{body[0].data.eTag}}", "contentType": "{{body[0].data.contentType}}",
"contentLength": "{{body[0].data.contentLength}}", "blobType": "{{body[0].data.blobType}}",
"url": "{{body[0].data.url}}", "sequencer": "{{body[0].data.sequencer}}",
"storageDiagnostics": { "batchId": "{{body[0].data.storageDiagnostics.batchId}}" } },
"dataVersion": "", "metadataVersion": "1" },
"resource": { "prefect.resource.id": "{{ body[0].data.url }}", "url": "{{body[0].data.url}}" } }"""

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def tracking_id() -> str:
    return f"T-{uuid.uuid4()}"


def record_envelopes(envelopes: list[dict]) -> list[dict]:
    return sorted((e for e in envelopes if not e.get("final")), key=lambda envelope: envelope["seq"])


def sent_records(envelopes: list[dict]) -> list[str]:
    return [record for envelope in record_envelopes(envelopes) for record in envelope["records"]]


def test_announcement_posts_the_exact_event_grid_blob_created_delivery(start_relay, receiver):
    relay = start_relay()
    data = b"id,amount\n1,10\n"
    properties = relay.upload("daily/ledger.csv", data, tracking_id="T-1")
    etag = properties.etag.strip('"')
    blob_url = relay.container.get_blob_client("daily/ledger.csv").url

    outputs = relay.announce("daily/ledger.csv")

    [request] = receiver.to(BLOB_CREATED)
    [event] = request.json()
    assert set(event) == {
        "topic",
        "subject",
        "eventType",
        "eventTime",
        "id",
        "data",
        "dataVersion",
        "metadataVersion",
    }
    assert event["topic"] == "/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
    assert (
        event["subject"]
        == f"/blobServices/default/containers/{relay.container.container_name}/blobs/daily/ledger.csv"
    )
    assert event["eventType"] == "Microsoft.Storage.BlobCreated"
    assert event["eventTime"] == properties.last_modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert UUID.match(event["id"])
    assert (event["dataVersion"], event["metadataVersion"]) == ("", "1")
    assert set(event["data"]) == {
        "api",
        "clientRequestId",
        "requestId",
        "eTag",
        "contentType",
        "contentLength",
        "blobType",
        "url",
        "sequencer",
        "storageDiagnostics",
    }
    assert event["data"]["api"] == "PutBlob"
    assert event["data"]["eTag"] == etag
    assert event["data"]["contentType"] == "text/csv"
    assert event["data"]["contentLength"] == len(data)
    assert event["data"]["blobType"] == "BlockBlob"
    assert event["data"]["url"] == blob_url
    assert re.fullmatch(r"[0-9A-F]{32}", event["data"]["sequencer"])
    assert all(UUID.match(event["data"][key]) for key in ("clientRequestId", "requestId"))
    assert UUID.match(event["data"]["storageDiagnostics"]["batchId"])
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"].startswith(f"{etag}:blob-created:")

    work_item = json.loads(outputs["work_item"])
    assert work_item == {
        "container": relay.container.container_name,
        "blobName": "daily/ledger.csv",
        "eTag": etag,
        "trackingId": "T-1",
        "contentLength": len(data),
    }
    assert [json.loads(item) for item in relay.work_items()] == [work_item]


def test_the_delivery_renders_through_the_original_azure_storage_template(start_relay, receiver):
    relay = start_relay()
    relay.upload("orders.csv", b"1\n", tracking_id=tracking_id())
    relay.announce("orders.csv")

    body = receiver.to(BLOB_CREATED)[0].json()
    rendered = json.loads(jinja2.Environment().from_string(AZURE_STORAGE_TEMPLATE).render(body=body))

    assert rendered["event"] == "Microsoft.Storage.BlobCreated"
    assert rendered["resource"] == {
        "prefect.resource.id": body[0]["data"]["url"],
        "url": body[0]["data"]["url"],
    }
    assert rendered["payload"]["data"]["contentLength"] == "2"


@pytest.mark.parametrize(
    ("overrides", "count", "first_byte"),
    [({}, 40_000, b"\x78"), ({"RECORDS_COMPRESSION": "none"}, 4000, b"{")],
    ids=["zlib by default", "none"],
)
def test_every_record_reaches_the_queue_once_in_order_in_envelopes_under_the_limit(
    start_relay, receiver, overrides, count, first_byte
):
    relay = start_relay(**overrides)
    lines = [f'{n},"Müller, {n}",\\path\\{n},{"x" * (n % 400)}' for n in range(count)]
    trace = tracking_id()
    relay.upload("big.csv", ("\n".join(lines) + "\n").encode(), tracking_id=trace)

    relay.announce("big.csv")
    assert relay.emit()

    messages = relay.messages()
    assert all(len(message) <= MAX_MESSAGE_BYTES for message in messages)
    assert {base64.b64decode(message)[:1] for message in messages} == {first_byte}
    envelopes = [decode_message(message) for message in messages]
    records = record_envelopes(envelopes)
    assert len(records) > 5
    assert [e["seq"] for e in records] == list(range(1, len(records) + 1))
    assert sent_records(envelopes) == lines
    etag = records[0]["eTag"]
    assert all((e["trackingId"], e["fileName"], e["eTag"]) == (trace, "big.csv", etag) for e in envelopes)
    [final] = [e for e in envelopes if e.get("final")]
    assert final == {
        "trackingId": trace,
        "fileName": "big.csv",
        "eTag": etag,
        "final": True,
        "totalRecordsSent": len(lines),
        "envelopes": len(records),
    }
    [summary] = receiver.events(SUMMARY)
    assert summary.json() == {"totalRecordsSent": len(lines), "trackingId": trace, "fileName": "big.csv"}
    assert summary.headers["idempotency-key"].startswith(f"{etag}:summary:")


@pytest.mark.parametrize(
    ("header_setting", "expected"), [("true", ["1,a", "2,b"]), ("false", ["id,name", "1,a", "2,b"])]
)
def test_a_header_line_is_a_record_only_when_first_line_is_header_is_false(
    start_relay, receiver, header_setting, expected
):
    relay = start_relay(FIRST_LINE_IS_HEADER=header_setting)
    relay.upload("with-header.csv", b"id,name\n1,a\n2,b\n", tracking_id=tracking_id())

    relay.announce("with-header.csv")
    relay.emit()

    assert sent_records(relay.envelopes()) == expected
    assert receiver.events(SUMMARY)[0].json()["totalRecordsSent"] == len(expected)


def test_crlf_lines_and_a_final_line_without_newline_are_records_and_trailing_blank_lines_are_not(
    start_relay, receiver
):
    relay = start_relay()
    relay.upload("windows.txt", b"alpha\r\n\r\nbeta\r\ngamma\r\n\r\n\r\n", tracking_id=tracking_id())
    relay.upload("no-newline.txt", b"one\ntwo", tracking_id=tracking_id())

    relay.announce("windows.txt")
    relay.emit()
    first = sent_records(relay.envelopes())
    relay.records.clear_messages()
    relay.announce("no-newline.txt")
    relay.emit()

    assert first == ["alpha", "", "beta", "gamma"]
    assert sent_records(relay.envelopes()) == ["one", "two"]
    assert [s.json()["totalRecordsSent"] for s in receiver.events(SUMMARY)] == [4, 2]


def test_an_empty_file_sends_no_records_but_a_final_envelope_and_a_summary_of_zero(start_relay, receiver):
    relay = start_relay()
    trace = tracking_id()
    relay.upload("empty.csv", b"", tracking_id=trace)

    relay.announce("empty.csv")
    relay.emit()

    [final] = relay.envelopes()
    assert (final["final"], final["totalRecordsSent"], final["envelopes"]) == (True, 0, 0)
    assert receiver.events(SUMMARY)[0].json() == {
        "totalRecordsSent": 0,
        "trackingId": trace,
        "fileName": "empty.csv",
    }


def test_a_blob_without_tracking_id_is_announced_then_fails_naming_the_blob_and_the_metadata(
    start_relay, receiver
):
    relay = start_relay()
    relay.upload("orphan.csv", b"1\n", tracking_id=None, owner="mainframe")

    with pytest.raises(
        MissingTrackingId, match=rf"blob {relay.container.container_name}/orphan.csv has no 'trackingId'"
    ):
        relay.announce("orphan.csv")

    assert len(receiver.events(BLOB_CREATED)) == 1
    assert relay.work_items() == []


def test_the_tracking_id_metadata_key_is_configurable_and_matched_in_any_case(start_relay):
    relay = start_relay(TRACKING_ID_METADATA_KEY="CorrelationID")
    relay.upload("keyed.csv", b"1\n", tracking_id=None, correlationid="C-7")

    assert json.loads(relay.announce("keyed.csv")["work_item"])["trackingId"] == "C-7"


def test_a_webhook_down_then_up_is_retried_and_makes_one_event(start_relay, receiver):
    relay = start_relay()
    relay.upload("flaky.csv", b"1\n2\n", tracking_id=tracking_id())
    receiver.drop_next(1)
    receiver.fail_next(1, 503)
    receiver.fail_next(1, 429, retry_after="0")

    relay.announce("flaky.csv")

    attempts = receiver.to(BLOB_CREATED)
    assert [a.status for a in attempts] == [None, 503, 429, 204]
    assert len({(a.body, a.headers["idempotency-key"]) for a in attempts}) == 1
    assert len(receiver.events(BLOB_CREATED)) == 1

    receiver.fail_next(2, 502)
    relay.emit()
    assert [a.status for a in receiver.to(SUMMARY)] == [502, 502, 204]
    assert len(receiver.events(SUMMARY)) == 1


def test_a_webhook_down_for_good_makes_the_function_raise_and_queues_nothing(start_relay, receiver):
    relay = start_relay(WEBHOOK_ATTEMPTS="3")
    relay.upload("unlucky.csv", b"1\n", tracking_id=tracking_id())
    receiver.fail_next(3, 503)

    with pytest.raises(
        DeliveryError, match=r"azure-storage webhook .*AZURE_STORAGE_WEBHOOK_URL.* after 3 attempt"
    ):
        relay.announce("unlucky.csv")

    assert len(receiver.to(BLOB_CREATED)) == 3
    assert relay.work_items() == []


def test_a_summary_webhook_nobody_listens_on_fails_the_emitter_and_keeps_the_work_item(start_relay):
    relay = start_relay(
        SUMMARY_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/hooks/summary", WEBHOOK_ATTEMPTS="2"
    )
    relay.upload("lonely.csv", b"1\n", tracking_id=tracking_id())
    relay.announce("lonely.csv")

    with pytest.raises(
        DeliveryError, match=r"summary webhook .*SUMMARY_WEBHOOK_URL.* after 2 attempt.*ConnectError"
    ):
        relay.emit()

    assert len(relay.work_items()) == 1


def test_the_blob_trigger_run_twice_for_one_blob_version_posts_the_same_request(start_relay, receiver):
    relay = start_relay()
    relay.upload("twice.csv", b"1\n", tracking_id=tracking_id())

    relay.announce("twice.csv")
    relay.announce("twice.csv")

    first, second = receiver.to(BLOB_CREATED)
    assert (first.body, first.headers["idempotency-key"]) == (second.body, second.headers["idempotency-key"])
    assert len(receiver.events(BLOB_CREATED)) == 1


def test_a_repeated_emission_repeats_envelopes_with_the_same_etag_and_seq_and_one_summary(
    start_relay, receiver
):
    relay = start_relay()
    relay.upload("again.csv", b"".join(b"%d\n" % n for n in range(20000)), tracking_id=tracking_id())
    work_item = relay.announce("again.csv")["work_item"]
    relay.emit_queue().send_message(work_item)

    assert relay.emit() and relay.emit()

    envelopes = record_envelopes(relay.envelopes())
    unique = {(e["eTag"], e["seq"]): e for e in envelopes}
    assert len(envelopes) == 2 * len(unique)
    assert all(unique[(e["eTag"], e["seq"])] == e for e in envelopes)
    assert len(receiver.to(SUMMARY)) == 2
    assert len(receiver.events(SUMMARY)) == 1


def test_a_blob_overwritten_after_its_work_item_was_queued_is_not_emitted_as_the_old_version(
    start_relay, receiver
):
    relay = start_relay()
    relay.upload("moving.csv", b"old\n", tracking_id=tracking_id())
    relay.announce("moving.csv")
    relay.upload("moving.csv", b"new\nnewer\n", tracking_id=tracking_id())

    assert relay.emit()
    assert relay.envelopes() == [] and receiver.to(SUMMARY) == []
    assert relay.work_items() == []

    relay.announce("moving.csv")
    relay.emit()
    assert sent_records(relay.envelopes()) == ["new", "newer"]


def test_a_record_too_large_for_one_message_fails_the_emission_naming_the_blob_and_record(
    start_relay, receiver
):
    relay = start_relay()
    relay.upload("wide.csv", b"ok\n" + b"x" * 60_000 + b"\n", tracking_id=tracking_id())
    relay.announce("wide.csv")

    with pytest.raises(
        EmissionError, match=r"wide.csv .*record 2 \(line 2\) is 60002 bytes as JSON.*Fix the file"
    ):
        relay.emit()

    assert receiver.to(SUMMARY) == []


def test_a_work_item_that_keeps_failing_ends_in_the_emit_queue_poison_queue(start_relay):
    relay = start_relay()
    relay.emit_queue().send_message('{"container": "x"}')

    for _ in range(relay.host.max_dequeue_count):
        with pytest.raises(WorkItemError, match="has no valid 'blobName'"):
            relay.emit()

    assert not relay.emit()
    poison = relay.host.queue(CONNECTION, relay.settings["EMIT_QUEUE"] + "-poison")
    assert [m.content for m in poison.peek_messages()] == [b'{"container": "x"}']


def test_a_missing_webhook_url_fails_the_first_invocation_naming_the_setting(start_relay):
    relay = start_relay(AZURE_STORAGE_WEBHOOK_URL="")
    relay.upload("early.csv", b"1\n", tracking_id=tracking_id())

    with pytest.raises(
        SettingsError, match="AZURE_STORAGE_WEBHOOK_URL is not set: set it to the `azure-storage`"
    ):
        relay.announce("early.csv")


def key_vault_reference(setting: str) -> str:
    """What Azure leaves in an app setting whose Key Vault reference it could not resolve."""
    secret = setting.replace("_", "-")
    return f"@Microsoft.KeyVault(SecretUri=https://kv-example.vault.azure.net/secrets/{secret}/0123abcd)"


def test_an_unresolved_summary_reference_fails_only_the_emitter_naming_the_setting(start_relay, receiver):
    relay = start_relay(SUMMARY_WEBHOOK_URL=key_vault_reference("SUMMARY_WEBHOOK_URL"))
    relay.upload("ledger.csv", b"1\n2\n", tracking_id=tracking_id())

    assert set(relay.host.functions) == {"announce_file", "emit_records"}
    relay.announce("ledger.csv")
    assert len(receiver.to(BLOB_CREATED)) == 1
    with pytest.raises(SettingsError, match=r"^SUMMARY_WEBHOOK_URL: Key Vault reference not resolved\. "):
        relay.emit()
    assert receiver.to(SUMMARY) == []


def test_an_unresolved_blob_created_reference_fails_the_announcement_naming_the_setting(
    start_relay, receiver
):
    relay = start_relay(AZURE_STORAGE_WEBHOOK_TOKEN=key_vault_reference("AZURE_STORAGE_WEBHOOK_TOKEN"))
    relay.upload("ledger.csv", b"1\n", tracking_id=tracking_id())

    with pytest.raises(
        SettingsError, match=r"^AZURE_STORAGE_WEBHOOK_TOKEN: Key Vault reference not resolved\. .*kv-example"
    ):
        relay.announce("ledger.csv")
    assert receiver.to(BLOB_CREATED) == []
    assert relay.work_items() == []


def failed_files_query_fields() -> dict[str, re.Pattern[str]]:
    """The fields docs/azure.md's failed-files query extracts from log lines, with their patterns."""
    docs = (REPO / "docs" / "azure.md").read_text()
    query = docs[docs.index("<!-- query: failed-files -->") :].split("```")[1]
    fields = re.findall(r'(\w+) = extract\(@"([^"]+)", 1, message\)', query)
    return {name: re.compile(pattern) for name, pattern in fields}


def test_the_docs_failed_files_query_finds_file_etag_and_tracking_id_in_both_functions_logs(
    start_relay, caplog
):
    relay = start_relay()
    tracking = tracking_id()
    properties = relay.upload("daily/ledger 1.csv", b"1\n", tracking_id=tracking)
    caplog.set_level(logging.INFO, logger="file_relay")

    relay.announce("daily/ledger 1.csv")
    relay.emit()

    fields = failed_files_query_fields()
    assert set(fields) == {"file", "eTag", "trackingId"}
    # As the query does: lines that have "for trackingId" and a file.
    messages = [record.getMessage() for record in caplog.records]
    lines = [line for line in messages if "for trackingId" in line and fields["file"].search(line)]
    assert len(lines) == 2, messages
    # The same fields travel as the records' own attributes (customDimensions), for filtering.
    file_relay_records = [record for record in caplog.records if record.name.startswith("file_relay")]
    tagged = [
        vars(record) for record in file_relay_records if getattr(record, "trackingId", None) == tracking
    ]
    assert len(tagged) >= 3, messages  # announcing, emitting, emitted
    assert {(r["file"], r["eTag"]) for r in tagged} == {
        (f"{relay.container.container_name}/daily/ledger 1.csv", properties.etag.strip('"'))
    }
    for line in lines:
        found = {name: pattern.search(line).group(1) for name, pattern in fields.items()}
        assert found == {
            "file": f"{relay.container.container_name}/daily/ledger 1.csv",
            "eTag": properties.etag.strip('"'),
            "trackingId": tracking,
        }
