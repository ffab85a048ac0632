"""Templates and request context, rendered as Prefect Cloud renders them (no server needed)."""

import json
import uuid
from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from prefect.server.events.schemas.events import Event
from pydantic import ValidationError

from tests.webhook_examples import EXAMPLES, blob_created
from webhooks.catalog import Webhook, load_catalog
from webhooks.limits import COPY_LIMIT_BYTES, MAX_BODY_DEPTH, MAX_EVENT_BYTES
from webhooks.rendering import FAILED_EVENT, HIDDEN_HEADERS, EventRenderer, check_event

JSON = [("Content-Type", "application/json")]

# The original Prefect Cloud example's templates, verbatim (one line each): ours must make the same events.
ORIGINAL_TEMPLATES = {
    "mainframe": '{ "event": "{{ body.event_name }}", "resource": { "prefect.resource.id": "prefect.webhook.mainframe", "prefect.resource.name": "prefect.webhook.mainframe", "stage": "{{ body.stage }}", "file_name": "{{ body.file_name }}", "trackingId": "{{ body.trackingId }}" } }',  # noqa: E501
    "azure-storage": '{ "event": "{{body[0].eventType}}", "payload": { "topic": "{{body[0].topic}}", "subject": "{{body[0].subject}}", "eventType": "{{body[0].eventType}}", "eventTime": "{{body[0].eventTime}}", "id": "{{body[0].id}}", "data": { "api": "{{body[0].data.api}}", "clientRequestId": "{{body[0].data.clientRequestId}}", "requestId": "{{body[0].data.requestId}}", "eTag": "{{body[0].data.eTag}}", "contentType": "{{body[0].data.contentType}}", "contentLength": "{{body[0].data.contentLength}}", "blobType": "{{body[0].data.blobType}}", "url": "{{body[0].data.url}}", "sequencer": "{{body[0].data.sequencer}}", "storageDiagnostics": { "batchId": "{{body[0].data.storageDiagnostics.batchId}}" } }, "dataVersion": "", "metadataVersion": "1" }, "resource": { "prefect.resource.id": "{{ body[0].data.url }}", "url": "{{body[0].data.url}}" } }',  # noqa: E501
    "summary": '{ "event": "Summary", "resource": { "prefect.resource.id": "prefect.webhook.summary", "prefect.resource.name": "prefect.webhook.summary", "totalRecordsSent": "{{ body.totalRecordsSent }}", "trackingId": "{{ body.trackingId }}" } }',  # noqa: E501
    "reconciliation": '{ "event": "Reconciliation", "resource": { "prefect.resource.id": "prefect.webhook.reconciliation", "prefect.resource.name": "prefect.webhook.reconciliation", "totalRecordsReceived": "{{ body.totalRecordsReceived }}", "trackingId": "{{ body.trackingId }}" } }',  # noqa: E501
}


def renderer(name: str) -> EventRenderer:
    return EventRenderer(next(webhook for webhook in load_catalog() if webhook.name == name))


def lab_renderer(template: str, **options) -> EventRenderer:
    return EventRenderer(
        Webhook("lab", "", Path("lab.json.j2"), template, options.pop("slug", "lab"), **options)
    )


def one_event(result) -> dict:
    assert result.failures == [], result.errors
    (event,) = result.events
    return event


@pytest.mark.parametrize(
    ("name", "body"), EXAMPLES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(EXAMPLES)]
)
def test_each_template_makes_the_original_examples_event(name, body):
    original = json.loads(
        ImmutableSandboxedEnvironment().from_string(ORIGINAL_TEMPLATES[name]).render(body=body)
    )
    event = one_event(renderer(name).interpret("POST", JSON, json.dumps(body).encode()))
    assert {key: event[key] for key in original} == original


def test_a_quote_in_a_file_name_still_makes_a_valid_event():
    body = {"event_name": "kickoff", "file_name": 'say "hi"\\.csv', "stage": "on-prem", "trackingId": "T"}
    event = one_event(renderer("mainframe").interpret("POST", JSON, json.dumps(body).encode()))
    assert event["resource"]["file_name"] == 'say "hi"\\.csv'


def test_counts_become_string_labels():
    event = one_event(
        renderer("summary").interpret("POST", JSON, b'{"totalRecordsSent": 123, "trackingId": "T"}')
    )
    assert event["resource"]["totalRecordsSent"] == "123"


def test_a_form_body_is_a_flat_dict():
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    event = one_event(renderer("summary").interpret("POST", form, b"totalRecordsSent=7&trackingId=T%201"))
    assert event["resource"]["totalRecordsSent"] == "7"
    assert event["resource"]["trackingId"] == "T 1"


@pytest.mark.parametrize(
    ("content_type", "raw", "seen"),
    [("text/plain", b'{"n": 1}', "dict"), ("text/plain", b"plain words", "str"), ("", b"[1, 2]", "list")],
)
def test_other_content_types_are_json_when_they_parse_else_text(content_type, raw, seen):
    lab = lab_renderer(
        '{"event": "seen", "resource": {"prefect.resource.id": "lab"}, '
        '"payload": {"kind": {{ (body is mapping) | tojson }}, "text": {{ (body is string) | tojson }}}}'
    )
    event = one_event(lab.interpret("POST", [("Content-Type", content_type)], raw))
    assert (event["payload"]["kind"], event["payload"]["text"]) == (seen == "dict", seen == "str")


def test_headers_are_found_in_any_case_and_authorization_is_never_there():
    lab = lab_renderer(
        '{"event": "seen", "resource": {"prefect.resource.id": "lab", '
        '"a": "{{ headers[\'X-Tracking-Id\'] }}", '
        '"b": "{{ headers[\'x-tracking-id\'] }}", "c": "{{ headers[\'X-TRACKING-ID\'] }}", '
        "\"auth\": \"{{ headers['Authorization'] | default('absent') }}\"}}"
    )
    headers = [("x-tracking-id", "T-9"), ("authorization", "Bearer hunter2")]
    event = one_event(lab.interpret("GET", headers, b""))
    assert [event["resource"][key] for key in ("a", "b", "c", "auth")] == ["T-9", "T-9", "T-9", "absent"]
    assert "hunter2" not in json.dumps(event)


def test_without_a_payload_the_event_carries_method_headers_and_body():
    event = one_event(
        renderer("summary").interpret("PUT", JSON, b'{"totalRecordsSent": 1, "trackingId": "T"}')
    )
    assert event["payload"] == {
        "method": "PUT",
        "headers": {"content-type": "application/json"},
        "body": {"totalRecordsSent": 1, "trackingId": "T"},
    }


def test_the_webhook_is_a_related_resource_named_as_cloud_names_it_and_id_and_occurred_are_filled_in():
    summary = renderer("summary")
    event = one_event(summary.interpret("POST", JSON, b'{"trackingId": "T"}'))
    assert event["related"] == [
        {
            "prefect.resource.id": summary.webhook.resource_id,
            "prefect.resource.name": "summary",
            "prefect.resource.role": "webhook",
        }
    ]
    assert summary.webhook.resource_id.startswith("prefect-cloud.webhook.")
    assert uuid.UUID(summary.webhook.resource_id.removeprefix("prefect-cloud.webhook."))
    assert uuid.UUID(event["id"]) and event["occurred"]


@pytest.mark.parametrize("header", ["Cookie", "X-Api-Key", "Proxy-Authorization", "X-Custom-Secret"])
def test_credential_headers_never_reach_templates_or_events(header):
    template = (
        '{"event": "seen", "resource": {"prefect.resource.id": "lab", '
        '"seen": "{{ headers[\'%s\'] is defined }}"}}'
    )
    lab = EventRenderer(
        Webhook("lab", "", Path("lab.json.j2"), template % header, "lab"),
        HIDDEN_HEADERS | {"x-custom-secret"},
    )
    event = one_event(lab.interpret("POST", [*JSON, (header, "s3cret-value")], b"{}"))
    assert event["resource"]["seen"] == "False"
    assert "s3cret-value" not in json.dumps(event)


def test_a_template_cannot_reach_python_internals():
    lab = lab_renderer(
        '{"event": "{{ body.__class__.__mro__[1].__subclasses__() }}", '
        '"resource": {"prefect.resource.id": "x"}}'
    )
    result = lab.interpret("POST", JSON, b"{}")
    assert result.events == []
    assert "unsafe" in result.errors[0]


def test_a_broken_template_makes_a_failure_event_with_what_was_received_and_rendered():
    lab = lab_renderer('{"event": "x", "resource": {"prefect.resource.id": "{{ body.id }}"}')  # missing brace
    result = lab.interpret("POST", [*JSON, ("Authorization", "Bearer s3cret")], b'{"id": "abc"}')
    (failure,) = result.failures
    assert failure["event"] == FAILED_EVENT == "prefect-cloud.webhook.failed"
    assert failure["resource"] == {
        "prefect.resource.id": lab.webhook.resource_id,
        "prefect.resource.name": "lab",
    }
    payload = failure["payload"]
    assert payload["method"] == "POST"
    assert payload["headers"] == {"content-type": "application/json"}
    assert payload["body"] == {"id": "abc"}
    assert payload["rendered"] == '{"event": "x", "resource": {"prefect.resource.id": "abc"}'
    assert "not render valid JSON" in payload["error"]


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ('{"resource": {"prefect.resource.id": "x"}}', "event: Field required"),
        ('{"event": "x", "resource": {"name": "x"}}', "prefect.resource.id"),
        ('{"event": "x", "resource": {"prefect.resource.id": "x", "count": 3}}', "resource.count"),
        ('["event"]', "must render a JSON object"),
        ('{"event": "x", "resource": {"prefect.resource.id": "x"}, "occurred": "yesterday"}', "occurred"),
        (
            '{"event": "x", "resource": {"prefect.resource.id": "x"}, "id": "not-a-uuid"}',
            "id: Input should be a valid UUID",
        ),
    ],
)
def test_an_event_prefect_would_refuse_is_an_error_naming_the_field(template, complaint):
    result = lab_renderer(template).interpret("POST", JSON, b"{}")
    assert result.events == []
    assert complaint in result.errors[0]


def test_malformed_json_is_a_failure_carrying_the_raw_text():
    result = renderer("summary").interpret("POST", JSON, b'{"trackingId": ')
    (failure,) = result.failures
    assert failure["payload"]["body"] == '{"trackingId": '
    assert "not valid JSON" in failure["payload"]["error"]


def test_the_same_idempotency_key_gives_the_same_event_id_per_webhook():
    body = b'{"trackingId": "T"}'
    ids = [
        one_event(renderer(name).interpret("POST", [*JSON, (header, "key-1")], body))["id"]
        for name, header in [
            ("summary", "Idempotency-Key"),
            ("summary", "webhook-id"),
            ("reconciliation", "Idempotency-Key"),
        ]
    ]
    assert ids[0] == ids[1] != ids[2]
    assert one_event(renderer("summary").interpret("POST", JSON, body))["id"] != ids[0]


def test_an_event_grid_event_id_is_the_idempotency_key():
    body = json.dumps([blob_created()]).encode()
    first, second = (one_event(renderer("azure-storage").interpret("POST", JSON, body)) for _ in range(2))
    assert first["id"] == second["id"]


def test_a_reused_event_grid_id_with_other_content_makes_another_event_id_under_the_same_key():
    storage = renderer("azure-storage")
    one, other = (
        storage.interpret("POST", JSON, json.dumps([blob_created(f"https://a/{n}.csv", "same-id")]).encode())
        for n in (1, 2)
    )
    assert one_event(one)["id"] != one_event(other)["id"]
    assert one.keys[one_event(one)["id"]].key_id == other.keys[one_event(other)["id"]].key_id
    assert not one.key_from_headers


def test_a_redelivery_batched_differently_keeps_each_events_id():
    storage = renderer("azure-storage")
    first, second = blob_created("https://a/1.csv", "g1"), blob_created("https://a/2.csv", "g2")
    alone = one_event(storage.interpret("POST", JSON, json.dumps([first]).encode()))
    batched = storage.interpret("POST", JSON, json.dumps([second, first]).encode())
    assert batched.events[1]["id"] == alone["id"]


def test_an_idempotency_key_with_another_body_makes_another_event_id_under_the_same_key():
    summary = renderer("summary")
    results = [
        summary.interpret("POST", [*JSON, ("Idempotency-Key", "k")], body)
        for body in (b'{"trackingId": "A"}', b'{"trackingId": "B"}')
    ]
    ids = [one_event(result)["id"] for result in results]
    assert ids[0] != ids[1]
    assert results[0].keys[ids[0]].key_id == results[1].keys[ids[1]].key_id
    assert results[0].key_from_headers


def test_a_signed_webhook_keys_on_its_signed_webhook_id_not_on_an_unsigned_idempotency_key():
    signed = lab_renderer(
        '{"event": "x", "resource": {"prefect.resource.id": "x"}}', auth="standard-webhooks"
    )
    body = b'{"n": 1}'
    ids = [
        one_event(signed.interpret("POST", [*JSON, ("webhook-id", "msg-1"), ("Idempotency-Key", key)], body))[
            "id"
        ]
        for key in ("replay-1", "replay-2")
    ]
    assert ids[0] == ids[1]


def test_a_split_array_makes_one_event_per_element_rendered_as_a_one_element_list():
    urls = [f"https://account.blob.core.windows.net/incoming/file-{n}.csv" for n in range(3)]
    body = json.dumps([blob_created(url, grid_id=f"grid-{n}") for n, url in enumerate(urls)]).encode()
    result = renderer("azure-storage").interpret("POST", JSON, body)
    assert result.failures == []
    assert [event["resource"]["prefect.resource.id"] for event in result.events] == urls
    assert len({event["id"] for event in result.events}) == 3
    assert result.events[1]["payload"]["id"] == "grid-1"


def test_a_bad_element_in_a_split_array_fails_alone():
    body = json.dumps(
        [blob_created("https://a/1.csv", "g1"), {"eventType": "x"}, blob_created("https://a/3.csv", "g3")]
    )
    result = renderer("azure-storage").interpret("POST", JSON, body.encode())
    assert [event["resource"]["url"] for event in result.events] == ["https://a/1.csv", "https://a/3.csv"]
    assert "array element 1" in result.errors[0]


def test_a_static_template_works_with_get_and_no_body():
    lab = lab_renderer(
        '{"event": "model.refreshed", "resource": {"prefect.resource.id": "product.models.recommendations"}}'
    )
    event = one_event(lab.interpret("GET", [], b""))
    assert (event["event"], event["payload"]["method"], event["payload"]["body"]) == (
        "model.refreshed",
        "GET",
        "",
    )


def test_from_cloud_event_reads_structured_and_binary_cloudevents():
    lab = lab_renderer("{{ body | from_cloud_event(headers) }}")
    structured = {
        "specversion": "1.0",
        "type": "com.example.file",
        "source": "/mainframe",
        "subject": "file-1",
        "id": "ce-1",
        "time": "2024-05-01T12:00:00Z",
        "data": {"rows": 5},
    }
    event = one_event(
        lab.interpret(
            "POST", [("Content-Type", "application/cloudevents+json")], json.dumps(structured).encode()
        )
    )
    assert (event["event"], event["resource"]["prefect.resource.id"], event["payload"]["data"]) == (
        "com.example.file",
        "file-1",
        {"rows": 5},
    )
    assert event["payload"]["cloudevents"]["source"] == "/mainframe"
    binary = [
        *JSON,
        ("ce-specversion", "1.0"),
        ("ce-type", "com.example.file"),
        ("ce-source", "/mainframe"),
        ("ce-id", "ce-2"),
    ]
    event = one_event(lab.interpret("POST", binary, b'{"rows": 6}'))
    assert (event["resource"]["prefect.resource.id"], event["payload"]["data"]) == ("/mainframe", {"rows": 6})


def valid_event(**changes) -> dict:
    event = {
        "id": str(uuid.uuid4()),
        "occurred": "2024-05-01T12:00:00+00:00",
        "event": "Summary",
        "payload": {},
        "resource": {"prefect.resource.id": "prefect.webhook.summary", "trackingId": "T"},
        "related": [{"prefect.resource.id": "prefect.webhook.summary", "prefect.resource.role": "webhook"}],
    }
    return {key: value for key, value in {**event, **changes}.items() if value is not ...}


@pytest.mark.parametrize(
    "event",
    [
        valid_event(),
        valid_event(event=""),
        valid_event(event=...),
        valid_event(event=5),
        valid_event(event="x" * 1024),
        valid_event(event="x" * 1025),
        valid_event(resource=...),
        valid_event(resource=[]),
        valid_event(resource={"name": "x"}),
        valid_event(resource={"prefect.resource.id": ""}),
        valid_event(resource={"prefect.resource.id": "x", "count": 3}),
        valid_event(resource={"prefect.resource.id": "x", **{f"l{n}": "v" for n in range(499)}}),
        valid_event(resource={"prefect.resource.id": "x", **{f"l{n}": "v" for n in range(500)}}),
        valid_event(related={"prefect.resource.id": "x"}),
        valid_event(related=[{"prefect.resource.id": "x"}]),
        valid_event(related=[{"prefect.resource.id": "x", "prefect.resource.role": ""}]),
        valid_event(related=[{"prefect.resource.id": "x", "prefect.resource.role": "r", "n": None}]),
        valid_event(
            related=[{"prefect.resource.id": f"x{n}", "prefect.resource.role": "r"} for n in range(100)]
        ),
        valid_event(
            related=[{"prefect.resource.id": f"x{n}", "prefect.resource.role": "r"} for n in range(101)]
        ),
        valid_event(payload=None),
        valid_event(payload=["a"]),
        valid_event(payload={"nested": {"any": [1, None]}}),
    ],
)
def test_the_gateways_event_check_agrees_with_prefects_own_model(event):
    try:
        Event.model_validate(event)
    except ValidationError:
        with pytest.raises(ValueError):  # noqa: PT011 - any refusal agrees with the model's
            check_event(event)
    else:
        check_event(event)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_a_json_body_nested_deeper_than_prefect_stores_is_a_failure_carrying_the_text():
    summary = renderer("summary")
    assert one_event(summary.interpret("POST", JSON, nested(MAX_BODY_DEPTH)))["payload"]["body"]
    result = summary.interpret("POST", JSON, nested(MAX_BODY_DEPTH + 1))
    assert result.events == [] and result.status == 400
    assert f"nested deeper than {MAX_BODY_DEPTH} levels" in result.errors[0]
    assert result.failures[0]["payload"]["body"] == nested(MAX_BODY_DEPTH + 1).decode()


def test_a_deep_body_without_a_json_content_type_is_text():
    lab = lab_renderer(
        '{"event": "seen", "resource": {"prefect.resource.id": "lab"}, '
        '"payload": {"text": {{ (body is string) | tojson }}}}'
    )
    event = one_event(lab.interpret("POST", [("Content-Type", "text/plain")], nested(MAX_BODY_DEPTH + 50)))
    assert event["payload"]["text"] is True


def test_a_template_that_nests_the_body_deeper_than_prefect_reads_is_refused():
    lab = lab_renderer(
        '{"event": "x", "resource": {"prefect.resource.id": "x"}, '
        '"payload": {"a": [[[{{ body | tojson }}]]]}}'
    )
    result = lab.interpret("POST", JSON, nested(MAX_BODY_DEPTH))
    assert result.events == []
    assert "nests deeper than" in result.errors[0]


def test_an_event_larger_than_prefect_publishes_is_413_and_its_failure_event_copies_little():
    # Control characters: 1 byte in the body, 6 in JSON.
    raw = json.dumps({"trackingId": "T", "text": "\x01" * (MAX_EVENT_BYTES // 6 + 1)}).encode()
    result = renderer("summary").interpret("POST", JSON, raw)
    assert (result.events, result.status) == ([], 413)
    assert f"more than the {MAX_EVENT_BYTES}" in result.errors[0]
    (failure,) = result.failures
    assert len(json.dumps(failure)) < 8 * COPY_LIMIT_BYTES
    assert "truncated" in failure["payload"]["body"]
