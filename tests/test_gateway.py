"""The gateway as a real process in front of a real Prefect server: requests in, events in Prefect out."""

import base64
import hashlib
import hmac
import json
import os
import socket
import sys
import time
import uuid
from urllib.parse import urlencode

import httpx
import pytest

from configuration import REPO_ROOT
from devstack.prefect_queries.events import read_events, wait_for_events
from devstack.services import Gateway, http_ok
from devstack.supervision.processes import ManagedProcess, ServiceError, free_port, wait_until
from tests.webhook_examples import EXAMPLES, blob_created
from webhooks.catalog import load_catalog
from webhooks.limits import MAX_BODY_DEPTH, MAX_EVENT_BYTES
from webhooks.rendering import FAILED_EVENT, EventRenderer

TEMPLATES = REPO_ROOT / "webhooks" / "templates"
TOKEN = "lab-token"
SIGNING_KEY = b"lab-signing-key-of-32-bytes-long"
LAB_CONFIG = f"""
[[webhooks]]
name = "headers"
template = "headers.json.j2"

[[webhooks]]
name = "broken"
template = "broken.json.j2"

[[webhooks]]
name = "guarded"
template = "{TEMPLATES / "summary.json.j2"}"
auth = "bearer"
secret_env = "LAB_TOKEN"

[[webhooks]]
name = "signed"
template = "{TEMPLATES / "reconciliation.json.j2"}"
auth = "standard-webhooks"

[[webhooks]]
name = "ping"
template = "ping.json.j2"
accept_get = true
"""
LAB_TEMPLATES = {
    "headers.json.j2": '{"event": "lab.headers", '
    '"resource": {"prefect.resource.id": "lab.{{ headers[\'X-Tracking-Id\'] }}", '
    '"lower": "{{ headers[\'x-tracking-id\'] }}", "upper": "{{ headers[\'X-TRACKING-ID\'] }}", '
    "\"authorization\": \"{{ headers['Authorization'] | default('absent') }}\"}}",
    # The closing brace is missing: the rendered text is not JSON.
    "broken.json.j2": '{"event": "lab.broken", '
    '"resource": {"prefect.resource.id": "lab.{{ body.trackingId }}"}',
    "ping.json.j2": '{"event": "lab.ping", '
    '"resource": {"prefect.resource.id": "lab.ping.{{ headers[\'x-tracking-id\'] }}"}}',
}


@pytest.fixture(scope="module")
def lab_gateway(start_gateway, prefect_server, tmp_path_factory):
    """A gateway with test webhooks: headers echo, a broken template, bearer and signature auth."""
    config_dir = tmp_path_factory.mktemp("lab-config")
    (config_dir / "webhooks.toml").write_text(LAB_CONFIG)
    for name, text in LAB_TEMPLATES.items():
        (config_dir / name).write_text(text)
    return start_gateway(
        prefect_server.api_url,
        config=config_dir / "webhooks.toml",
        options=[
            "--max-body-bytes",
            "4096",
            "--body-timeout",
            "1",
            "--max-connections",
            "20",
            "--allowed-origin",
            "eventgrid.azure.net",
            "--hide-header",
            "X-Lab-Secret",
        ],
        extra_env={
            "LAB_TOKEN": TOKEN,
            "SIGNED_WEBHOOK_SECRET": "whsec_" + base64.b64encode(SIGNING_KEY).decode(),
        },
    )


def tracking_id() -> str:
    return f"T-{uuid.uuid4()}"


def labelled(tracking: str) -> dict:
    return {"labels": {"trackingId": [tracking]}}


@pytest.mark.parametrize(
    ("name", "example"), EXAMPLES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(EXAMPLES)]
)
def test_each_webhook_turns_the_original_example_into_its_event_in_prefect(
    gateway, prefect_server, name, example
):
    tracking = tracking_id()
    if name == "azure-storage":
        url = f"https://account.blob.core.windows.net/incoming/{tracking}.csv"
        body, resource = [blob_created(url, grid_id=tracking)], {"id": [url]}
    else:
        body, resource = {**example, "trackingId": tracking}, labelled(tracking)
    response = httpx.post(gateway.hook_url(name), json=body)
    assert response.status_code == 204, response.text
    (event,) = wait_for_events(prefect_server.api_url, 1, resource=resource)
    if name == "azure-storage":
        assert event["event"] == "Microsoft.Storage.BlobCreated"
        assert event["resource"] == {"prefect.resource.id": url, "url": url}
        assert event["payload"]["data"]["contentLength"] == "524288"
    else:
        expected_name = {"summary": "Summary", "reconciliation": "Reconciliation"}.get(
            name, example.get("event_name")
        )
        assert event["event"] == expected_name
        assert event["resource"]["prefect.resource.id"] == f"prefect.webhook.{name}"
        labels = {key: str(value) for key, value in body.items() if key in event["resource"]}
        assert labels and all(event["resource"][key] == value for key, value in labels.items())
    webhook = next(w for w in load_catalog() if w.name == name)
    assert event["related"][0]["prefect.resource.id"] == webhook.resource_id


def test_a_form_body_fills_the_template_like_json(gateway, prefect_server):
    tracking = tracking_id()
    response = httpx.post(
        gateway.hook_url("summary"), data={"totalRecordsSent": "42", "trackingId": tracking}
    )
    assert response.status_code == 204
    (event,) = wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(tracking))
    assert event["resource"]["totalRecordsSent"] == "42"


def test_header_names_work_in_any_case_and_credential_headers_stay_hidden(lab_gateway, prefect_server):
    tracking = tracking_id()
    credentials = {
        "Authorization": "Bearer hunter2",
        "Cookie": "session=hunter3",
        "X-Api-Key": "hunter4",
        "X-Lab-Secret": "hunter5",
    }
    response = httpx.delete(
        lab_gateway.hook_url("headers"), headers={"X-Tracking-Id": tracking, **credentials}
    )
    assert response.status_code == 204
    (event,) = wait_for_events(prefect_server.api_url, 1, resource={"id": [f"lab.{tracking}"]})
    assert (event["resource"]["lower"], event["resource"]["upper"]) == (tracking, tracking)
    assert event["resource"]["authorization"] == "absent"
    assert not any(f"hunter{n}" in json.dumps(event) for n in range(2, 6))
    assert event["payload"]["method"] == "DELETE"


def failure_events(api_url: str, slug: str, marker: str) -> list[dict]:
    """The failure events of one webhook that mention `marker`, once there is one."""

    def matching() -> list[dict]:
        failures = read_events(api_url, [FAILED_EVENT], {"labels": {"prefect.resource.name": [slug]}})
        return [event for event in failures if marker in json.dumps(event["payload"])]

    return wait_until(matching, 30, f"a failure event mentioning {marker}")


def test_a_template_error_answers_400_and_leaves_a_failure_event(lab_gateway, prefect_server):
    tracking = tracking_id()
    response = httpx.post(
        lab_gateway.hook_url("broken"), json={"trackingId": tracking}, headers={"Authorization": "Bearer x"}
    )
    assert response.status_code == 400
    assert "did not render valid JSON" in response.json()["error"]
    (failure,) = failure_events(prefect_server.api_url, "broken", tracking)
    payload = failure["payload"]
    assert payload["method"] == "POST"
    assert payload["body"] == {"trackingId": tracking}
    assert (
        payload["rendered"]
        == f'{{"event": "lab.broken", "resource": {{"prefect.resource.id": "lab.{tracking}"}}'
    )
    assert (
        "authorization" not in payload["headers"] and payload["headers"]["content-type"] == "application/json"
    )
    assert "did not render valid JSON" in payload["error"]


def test_a_kickoff_without_its_event_name_answers_400_instead_of_a_nameless_event(gateway, prefect_server):
    tracking = tracking_id()
    body = {"file_name": "orders.csv", "stage": "on-prem", "trackingId": tracking}
    response = httpx.post(gateway.hook_url("mainframe"), json=body)
    assert response.status_code == 400
    assert "empty event name" in response.json()["error"]
    (failure,) = failure_events(prefect_server.api_url, "mainframe", tracking)
    assert failure["payload"]["body"] == body


def test_malformed_json_answers_400_and_leaves_a_failure_event(gateway, prefect_server):
    tracking = tracking_id()
    raw = f'{{"trackingId": "{tracking}", "totalRecordsSent": '
    response = httpx.post(
        gateway.hook_url("summary"), content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    (failure,) = failure_events(prefect_server.api_url, "summary", tracking)
    assert failure["payload"]["body"] == raw


def test_a_bearer_protected_webhook_refuses_requests_without_the_token(lab_gateway, prefect_server):
    tracking = tracking_id()
    body = {"totalRecordsSent": 1, "trackingId": tracking}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(lab_gateway.hook_url("guarded"), json=body, headers=headers)
        assert (response.status_code, response.json()["error"]) == (401, "Missing or wrong bearer token")
        assert response.headers["www-authenticate"] == "Bearer"
    response = httpx.post(
        lab_gateway.hook_url("guarded"), json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 204
    wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(tracking))


def test_a_signed_webhook_accepts_a_standard_webhooks_signature_only(lab_gateway, prefect_server):
    tracking = tracking_id()
    body = json.dumps({"totalRecordsReceived": 9, "trackingId": tracking}).encode()
    timestamp = str(int(time.time()))
    digest = hmac.new(SIGNING_KEY, f"msg-{tracking}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": f"msg-{tracking}",
        "webhook-timestamp": timestamp,
    }
    bad = httpx.post(
        lab_gateway.hook_url("signed"), content=body, headers={**headers, "webhook-signature": "v1,AAAA"}
    )
    assert (bad.status_code, bad.json()["error"]) == (401, "Invalid signature")
    signature = "v1," + base64.b64encode(digest).decode()
    assert (
        httpx.post(
            lab_gateway.hook_url("signed"), content=body, headers={**headers, "webhook-signature": signature}
        ).status_code
        == 204
    )
    (event,) = wait_for_events(prefect_server.api_url, 1, ["Reconciliation"], labelled(tracking))
    assert event["resource"]["totalRecordsReceived"] == "9"


def test_a_body_over_the_limit_gets_413(lab_gateway, prefect_server):
    tracking = tracking_id()
    too_big = {"trackingId": tracking, "padding": "x" * 5000}
    response = httpx.post(
        lab_gateway.hook_url("guarded"), json=too_big, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_a_static_template_that_accepts_get_answers_methods_without_a_body(
    lab_gateway, prefect_server, method
):
    tracking = tracking_id()
    response = httpx.request(method, lab_gateway.hook_url("ping"), headers={"X-Tracking-Id": tracking})
    assert response.status_code == 204
    (event,) = wait_for_events(prefect_server.api_url, 1, ["lab.ping"], {"id": [f"lab.ping.{tracking}"]})
    assert (event["payload"]["method"], event["payload"]["body"]) == (method, "")


def test_event_grid_subscription_validation_is_answered(gateway):
    code = str(uuid.uuid4())
    validation = [
        {
            "id": str(uuid.uuid4()),
            "topic": "/subscriptions/s",
            "subject": "",
            "eventTime": "2024-05-01T12:00:00Z",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {
                "validationCode": code,
                "validationUrl": "https://rp-eastus.eventgrid.azure.net/validate",
            },
            "dataVersion": "2",
            "metadataVersion": "1",
        }
    ]
    response = httpx.post(
        gateway.hook_url("azure-storage"),
        json=validation,
        headers={"aeg-event-type": "SubscriptionValidation"},
    )
    assert (response.status_code, response.json()) == (200, {"validationResponse": code})


def test_the_cloudevents_options_handshake_grants_the_origin(gateway):
    response = httpx.options(
        gateway.hook_url("azure-storage"), headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert response.status_code == 200
    assert response.headers["webhook-allowed-origin"] == "eventgrid.azure.net"
    assert response.headers["webhook-allowed-rate"] == "*"
    assert "POST" in response.headers["allow"]


def test_a_batched_event_grid_delivery_makes_one_event_per_blob(gateway, prefect_server):
    batch = uuid.uuid4()
    urls = [f"https://account.blob.core.windows.net/incoming/{batch}-{n}.csv" for n in range(3)]
    body = [blob_created(url, grid_id=f"{batch}-{n}") for n, url in enumerate(urls)]
    assert httpx.post(gateway.hook_url("azure-storage"), json=body).status_code == 204
    events = wait_for_events(prefect_server.api_url, 3, ["Microsoft.Storage.BlobCreated"], {"id": urls})
    assert sorted(event["resource"]["url"] for event in events) == sorted(urls)


def test_redelivered_webhook_makes_one_event(gateway, prefect_server):
    tracking = tracking_id()
    body = {"totalRecordsSent": 3, "trackingId": tracking}
    headers = {"Idempotency-Key": f"etag-{tracking}:summary"}
    for _ in range(2):
        assert httpx.post(gateway.hook_url("summary"), json=body, headers=headers).status_code == 204
    wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(tracking))
    # Redelivered after the first copy reached Prefect, then a marker: the gateway forwards in
    # order, so once the marker is stored, a second copy would be stored too.
    assert httpx.post(gateway.hook_url("summary"), json=body, headers=headers).status_code == 204
    marker = tracking_id()
    assert httpx.post(gateway.hook_url("summary"), json={"trackingId": marker}).status_code == 204
    wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(marker))
    assert len(read_events(prefect_server.api_url, ["Summary"], labelled(tracking))) == 1


def test_an_unknown_webhook_is_404_and_names_no_other(gateway):
    response = httpx.post(gateway.hook_url("nope"), json={})
    assert (response.status_code, response.json()) == (404, {"error": "no webhook at /hooks/nope"})


def test_health_reports_the_queue_and_that_prefect_is_reachable(gateway, prefect_server):
    health = gateway.health()
    assert health["prefect_reachable"] is True
    assert health["prefect_api_url"] == prefect_server.api_url
    assert health["max_events_per_second"] == 500
    assert isinstance(health["queued"], int) and health["rejected"] == 0
    assert "mainframe" in health["webhooks"] and health["forwarder_restarts"] == 0


def test_with_an_admin_token_health_tells_details_only_to_its_bearer(start_gateway, prefect_server):
    guarded = start_gateway(prefect_server.api_url, extra_env={"GATEWAY_ADMIN_TOKEN": "admin-secret"})
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert httpx.get(f"{guarded.url}/health", headers=headers).json() == {"status": "ok"}
    details = httpx.get(f"{guarded.url}/health", headers={"Authorization": "Bearer admin-secret"}).json()
    assert details["prefect_api_url"] == prefect_server.api_url and "webhooks" in details


def blob_for(tracking: str, grid_id: str) -> tuple[str, list[dict]]:
    url = f"https://account.blob.core.windows.net/incoming/{tracking}.csv"
    return url, [blob_created(url, grid_id=grid_id)]


def test_two_files_announced_with_one_event_grid_id_make_two_events_and_a_warning(gateway, prefect_server):
    # The original example's scripts send Microsoft's sample id for every file.
    grid_id = str(uuid.uuid4())
    (first, first_body), (second, second_body) = (
        blob_for(tracking_id(), grid_id),
        blob_for(tracking_id(), grid_id),
    )
    for body in (first_body, first_body, second_body):  # the first one redelivered, unchanged
        assert httpx.post(gateway.hook_url("azure-storage"), json=body).status_code == 204
    events = wait_for_events(
        prefect_server.api_url, 2, ["Microsoft.Storage.BlobCreated"], {"id": [first, second]}
    )
    assert sorted(event["resource"]["url"] for event in events) == sorted([first, second])
    assert f"event-id:{grid_id} came before with different content" in gateway.process.output()
    # The redelivery stayed one event: a marker sent after it is stored, so a second copy would be too.
    marker, marker_body = blob_for(tracking_id(), str(uuid.uuid4()))
    assert httpx.post(gateway.hook_url("azure-storage"), json=marker_body).status_code == 204
    wait_for_events(prefect_server.api_url, 1, resource={"id": [marker]})
    assert (
        len(read_events(prefect_server.api_url, ["Microsoft.Storage.BlobCreated"], {"id": [first, second]}))
        == 2
    )


def test_an_idempotency_key_reused_with_another_body_is_422_and_accepts_nothing(gateway, prefect_server):
    tracking, other = tracking_id(), tracking_id()
    headers = {"Idempotency-Key": f"key-{tracking}"}
    assert (
        httpx.post(gateway.hook_url("summary"), json={"trackingId": tracking}, headers=headers).status_code
        == 204
    )
    wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(tracking))
    reused = httpx.post(gateway.hook_url("summary"), json={"trackingId": other}, headers=headers)
    assert reused.status_code == 422
    assert "came before with a different body" in reused.json()["error"]
    marker = tracking_id()
    assert httpx.post(gateway.hook_url("summary"), json={"trackingId": marker}).status_code == 204
    wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(marker))
    assert read_events(prefect_server.api_url, ["Summary"], labelled(other)) == []


def signed_request(body: bytes, message_id: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(SIGNING_KEY, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def test_a_signed_request_replayed_with_a_new_idempotency_key_is_still_one_event(lab_gateway, prefect_server):
    tracking = tracking_id()
    body = json.dumps({"totalRecordsReceived": 1, "trackingId": tracking}).encode()
    headers = signed_request(body, f"msg-{tracking}")
    for replay in ("first", "second"):
        response = httpx.post(
            lab_gateway.hook_url("signed"), content=body, headers={**headers, "Idempotency-Key": replay}
        )
        assert response.status_code == 204
    marker = tracking_id()
    marker_body = json.dumps({"totalRecordsReceived": 1, "trackingId": marker}).encode()
    assert (
        httpx.post(
            lab_gateway.hook_url("signed"), content=marker_body, headers=signed_request(marker_body, marker)
        ).status_code
        == 204
    )
    wait_for_events(prefect_server.api_url, 1, ["Reconciliation"], labelled(marker))
    assert len(read_events(prefect_server.api_url, ["Reconciliation"], labelled(tracking))) == 1


def padded_summary(url: str, tracking: str, characters: int) -> tuple[bytes, dict]:
    """A summary form padded with control characters (3 bytes in the form, 6 in JSON), and its headers."""
    raw = urlencode({"trackingId": tracking, "padding": "\x01" * characters}).encode()
    request = httpx.Client().build_request(
        "POST", url, content=raw, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    return raw, dict(request.headers)


def test_an_event_just_under_prefects_size_limit_is_stored_and_one_over_it_is_413(gateway, prefect_server):
    url, tracking = gateway.hook_url("summary"), tracking_id()
    summary = EventRenderer(next(w for w in load_catalog() if w.name == "summary"))

    def rendered(characters: int):  # as the gateway renders it
        raw, headers = padded_summary(url, tracking, characters)
        return summary.interpret("POST", headers.items(), raw)

    # Each character adds 6 bytes: the most padding whose event is within the limit.
    near = MAX_EVENT_BYTES // 6 - 500
    (event,) = rendered(near).events
    characters = near + (MAX_EVENT_BYTES - len(json.dumps(event, separators=(",", ":")))) // 6
    assert rendered(characters).events and rendered(characters + 1).too_large
    raw, headers = padded_summary(url, tracking, characters)
    assert httpx.post(url, content=raw, headers=headers).status_code == 204
    (event,) = wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(tracking))
    assert len(event["payload"]["body"]["padding"]) == characters
    over, over_headers = padded_summary(url, other := tracking_id(), characters + 1)
    response = httpx.post(url, content=over, headers=over_headers)
    assert response.status_code == 413 and "PREFECT_EVENTS_MAXIMUM_SIZE_BYTES" in response.json()["error"]
    (failure,) = failure_events(prefect_server.api_url, "summary", other)
    assert "truncated" in failure["payload"]["body"]


def test_a_megabyte_form_of_control_characters_is_413_not_a_silent_drop(gateway, prefect_server):
    tracking = tracking_id()
    form = f"trackingId={tracking}&padding=" + "%01" * (1024 * 1024 // 3 - 100)
    response = httpx.post(
        gateway.hook_url("summary"),
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    failure_events(prefect_server.api_url, "summary", tracking)


def test_a_body_nested_as_deep_as_prefect_stores_arrives_and_one_level_more_is_400(gateway, prefect_server):
    tracking = tracking_id()
    deep = json.loads("[" * (MAX_BODY_DEPTH - 1) + "]" * (MAX_BODY_DEPTH - 1))
    response = httpx.post(gateway.hook_url("summary"), json={"trackingId": tracking, "deep": deep})
    assert response.status_code == 204
    wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(tracking))
    deeper = json.dumps({"trackingId": (other := tracking_id()), "deep": [deep]})
    response = httpx.post(
        gateway.hook_url("summary"), content=deeper, headers={"Content-Type": "application/json"}
    )
    assert (
        response.status_code == 400
        and f"nested deeper than {MAX_BODY_DEPTH} levels" in response.json()["error"]
    )
    failure_events(prefect_server.api_url, "summary", other)


def test_a_stalled_body_gets_408_and_its_connection_closed(lab_gateway):
    with socket.create_connection((lab_gateway.host, lab_gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /hooks/ping HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):  # ends when the gateway closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 5


def test_connections_beyond_the_limit_get_503_until_others_close(lab_gateway, prefect_server):
    idle = [socket.create_connection((lab_gateway.host, lab_gateway.port)) for _ in range(20)]
    try:
        assert httpx.post(lab_gateway.hook_url("ping"), headers={"X-Tracking-Id": "x"}).status_code == 503
    finally:
        for sock in idle:
            sock.close()
    wait_until(
        lambda: (
            httpx.post(lab_gateway.hook_url("ping"), headers={"X-Tracking-Id": tracking_id()}).status_code
            == 204
        ),
        10,
        "the gateway to take requests again",
    )


def test_handshakes_on_a_protected_webhook_need_its_auth_or_an_allowed_origin(lab_gateway):
    code = str(uuid.uuid4())
    validation = [
        {
            "id": code,
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {"validationCode": code},
        }
    ]
    validate = {"aeg-event-type": "SubscriptionValidation"}
    assert httpx.post(lab_gateway.hook_url("guarded"), json=validation, headers=validate).status_code == 401
    answer = httpx.post(
        lab_gateway.hook_url("guarded"),
        json=validation,
        headers={**validate, "Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.json() == {"validationResponse": code}
    for origin, status in (("attacker.example", 401), ("eventgrid.azure.net", 200)):
        assert (
            httpx.options(
                lab_gateway.hook_url("guarded"), headers={"WebHook-Request-Origin": origin}
            ).status_code
            == status
        )
    answer = httpx.options(
        lab_gateway.hook_url("guarded"),
        headers={"WebHook-Request-Origin": "a.example", "Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.headers["webhook-allowed-origin"] == "a.example"


def test_get_and_head_on_a_webhook_are_405_and_leave_no_failure_event(gateway, prefect_server):
    probe = tracking_id()
    for method in ("GET", "HEAD"):
        response = httpx.request(method, gateway.hook_url("mainframe"), headers={"X-Probe": probe})
        assert response.status_code == 405 and "POST" in response.headers["allow"]
    marker = tracking_id()
    httpx.post(gateway.hook_url("mainframe"), json={"trackingId": marker})  # no event_name: a failure event
    failure_events(prefect_server.api_url, "mainframe", marker)
    assert [
        event for event in read_events(prefect_server.api_url, [FAILED_EVENT]) if probe in json.dumps(event)
    ] == []


def test_a_second_gateway_on_one_queue_is_refused_naming_the_first(gateway, prefect_server, service_logs):
    second = Gateway(gateway.data_dir, service_logs, prefect_server.api_url)
    with pytest.raises(ServiceError) as refused:
        try:
            second.start()
        finally:
            second.stop()
    assert f"another gateway (pid {gateway.process.pid}, {gateway.url})" in str(refused.value)
    assert "--data-dir" in str(refused.value)


def test_webhooks_without_auth_are_not_served_beyond_loopback_unless_allowed(
    prefect_server, service_logs, tmp_path
):
    exposed = Gateway(tmp_path / "exposed", service_logs, prefect_server.api_url, host="0.0.0.0")
    with pytest.raises(ServiceError) as refused:
        try:
            exposed.start()
        finally:
            exposed.stop()
    assert "--allow-unauthenticated" in str(refused.value)


def test_by_default_the_queue_lives_in_the_per_user_state_folder_and_says_so(
    prefect_server, service_logs, tmp_path
):
    port = free_port()
    gateway = ManagedProcess(
        "default-gateway",
        [sys.executable, "-m", "webhooks", "serve", "--port", str(port)],
        service_logs / f"gateway-{port}.log",
        env={**os.environ, "PREFECT_API_URL": prefect_server.api_url, "XDG_STATE_HOME": str(tmp_path)},
        cwd=REPO_ROOT,
    ).start()
    try:
        gateway.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 30)
        queue = tmp_path / "prefect-webhook-gateway" / "outbox.sqlite3"
        assert f"Queue: {queue} (the default: a per-user state folder" in gateway.output()
        assert queue.exists()
    finally:
        gateway.stop()
