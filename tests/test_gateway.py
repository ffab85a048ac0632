"""The gateway as a real process in front of a real Prefect server: requests in, events in Prefect out."""

import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest

from devstack.prefect_api import read_events, wait_for_events
from devstack.processes import wait_until
from devstack.services import REPO_ROOT
from tests.webhook_examples import EXAMPLES, blob_created

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
template = "{TEMPLATES / 'summary.json.j2'}"
auth = "bearer"
secret_env = "LAB_TOKEN"

[[webhooks]]
name = "signed"
template = "{TEMPLATES / 'reconciliation.json.j2'}"
auth = "standard-webhooks"

[[webhooks]]
name = "ping"
template = "ping.json.j2"
"""
LAB_TEMPLATES = {
    "headers.json.j2": '{"event": "lab.headers", "resource": {"prefect.resource.id": "lab.{{ headers[\'X-Tracking-Id\'] }}", '
    '"lower": "{{ headers[\'x-tracking-id\'] }}", "upper": "{{ headers[\'X-TRACKING-ID\'] }}", '
    '"authorization": "{{ headers[\'Authorization\'] | default(\'absent\') }}"}}',
    # The closing brace is missing: the rendered text is not JSON.
    "broken.json.j2": '{"event": "lab.broken", "resource": {"prefect.resource.id": "lab.{{ body.trackingId }}"}',
    "ping.json.j2": '{"event": "lab.ping", "resource": {"prefect.resource.id": "lab.ping.{{ headers[\'x-tracking-id\'] }}"}}',
}


@pytest.fixture(scope="module")
def lab_gateway(start_gateway, prefect_server, tmp_path_factory):
    """A gateway with test webhooks: headers echo, a broken template, bearer and signature auth, a small body limit."""
    config_dir = tmp_path_factory.mktemp("lab-config")
    (config_dir / "webhooks.toml").write_text(LAB_CONFIG)
    for name, text in LAB_TEMPLATES.items():
        (config_dir / name).write_text(text)
    return start_gateway(
        prefect_server.api_url,
        config=config_dir / "webhooks.toml",
        options=["--max-body-bytes", "4096"],
        extra_env={"LAB_TOKEN": TOKEN, "SIGNED_WEBHOOK_SECRET": "whsec_" + base64.b64encode(SIGNING_KEY).decode()},
    )


def tracking_id() -> str:
    return f"T-{uuid.uuid4()}"


def labelled(tracking: str) -> dict:
    return {"labels": {"trackingId": [tracking]}}


@pytest.mark.parametrize(("name", "example"), EXAMPLES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(EXAMPLES)])
def test_each_webhook_turns_the_original_example_into_its_event_in_prefect(gateway, prefect_server, name, example):
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
        expected_name = {"summary": "Summary", "reconciliation": "Reconciliation"}.get(name, example.get("event_name"))
        assert event["event"] == expected_name
        assert event["resource"]["prefect.resource.id"] == f"prefect.webhook.{name}"
        labels = {key: str(value) for key, value in body.items() if key in event["resource"]}
        assert labels and all(event["resource"][key] == value for key, value in labels.items())
    assert event["related"][0]["prefect.resource.id"] == f"prefect.webhook.{name}"


def test_a_form_body_fills_the_template_like_json(gateway, prefect_server):
    tracking = tracking_id()
    response = httpx.post(gateway.hook_url("summary"), data={"totalRecordsSent": "42", "trackingId": tracking})
    assert response.status_code == 204
    (event,) = wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(tracking))
    assert event["resource"]["totalRecordsSent"] == "42"


def test_header_names_work_in_any_case_and_authorization_stays_hidden(lab_gateway, prefect_server):
    tracking = tracking_id()
    response = httpx.get(lab_gateway.hook_url("headers"), headers={"X-Tracking-Id": tracking, "Authorization": "Bearer hunter2"})
    assert response.status_code == 204
    (event,) = wait_for_events(prefect_server.api_url, 1, resource={"id": [f"lab.{tracking}"]})
    assert (event["resource"]["lower"], event["resource"]["upper"]) == (tracking, tracking)
    assert event["resource"]["authorization"] == "absent"
    assert "hunter2" not in json.dumps(event)
    assert event["payload"]["method"] == "GET"


def failure_events(api_url: str, slug: str, marker: str) -> list[dict]:
    """The `prefect.webhook.failed` events of one webhook that mention `marker`, once there is one."""

    def matching() -> list[dict]:
        failures = read_events(api_url, ["prefect.webhook.failed"], {"id": [f"prefect.webhook.{slug}"]})
        return [event for event in failures if marker in json.dumps(event["payload"])]

    return wait_until(matching, 30, f"a failure event mentioning {marker}")


def test_a_template_error_answers_400_and_leaves_a_failure_event(lab_gateway, prefect_server):
    tracking = tracking_id()
    response = httpx.post(lab_gateway.hook_url("broken"), json={"trackingId": tracking}, headers={"Authorization": "Bearer x"})
    assert response.status_code == 400
    assert "did not render valid JSON" in response.json()["error"]
    (failure,) = failure_events(prefect_server.api_url, "broken", tracking)
    payload = failure["payload"]
    assert payload["method"] == "POST"
    assert payload["body"] == {"trackingId": tracking}
    assert payload["rendered"] == f'{{"event": "lab.broken", "resource": {{"prefect.resource.id": "lab.{tracking}"}}'
    assert "authorization" not in payload["headers"] and payload["headers"]["content-type"] == "application/json"
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
    response = httpx.post(gateway.hook_url("summary"), content=raw, headers={"Content-Type": "application/json"})
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
    response = httpx.post(lab_gateway.hook_url("guarded"), json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 204
    wait_for_events(prefect_server.api_url, 1, ["Summary"], labelled(tracking))


def test_a_signed_webhook_accepts_a_standard_webhooks_signature_only(lab_gateway, prefect_server):
    tracking = tracking_id()
    body = json.dumps({"totalRecordsReceived": 9, "trackingId": tracking}).encode()
    timestamp = str(int(time.time()))
    digest = hmac.new(SIGNING_KEY, f"msg-{tracking}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {"Content-Type": "application/json", "webhook-id": f"msg-{tracking}", "webhook-timestamp": timestamp}
    bad = httpx.post(lab_gateway.hook_url("signed"), content=body, headers={**headers, "webhook-signature": "v1,AAAA"})
    assert (bad.status_code, bad.json()["error"]) == (401, "Invalid signature")
    signature = "v1," + base64.b64encode(digest).decode()
    assert httpx.post(lab_gateway.hook_url("signed"), content=body, headers={**headers, "webhook-signature": signature}).status_code == 204
    (event,) = wait_for_events(prefect_server.api_url, 1, ["Reconciliation"], labelled(tracking))
    assert event["resource"]["totalRecordsReceived"] == "9"


def test_a_body_over_the_limit_gets_413(lab_gateway, prefect_server):
    tracking = tracking_id()
    too_big = {"trackingId": tracking, "padding": "x" * 5000}
    response = httpx.post(lab_gateway.hook_url("guarded"), json=too_big, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_a_static_template_answers_methods_without_a_body(lab_gateway, prefect_server, method):
    tracking = tracking_id()
    response = httpx.request(method, lab_gateway.hook_url("ping"), headers={"X-Tracking-Id": tracking})
    assert response.status_code == 204
    (event,) = wait_for_events(prefect_server.api_url, 1, ["lab.ping"], {"id": [f"lab.ping.{tracking}"]})
    assert (event["payload"]["method"], event["payload"]["body"]) == (method, "")


def test_event_grid_subscription_validation_is_answered(gateway):
    code = str(uuid.uuid4())
    validation = [{
        "id": str(uuid.uuid4()), "topic": "/subscriptions/s", "subject": "", "eventTime": "2024-05-01T12:00:00Z",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "data": {"validationCode": code, "validationUrl": "https://rp-eastus.eventgrid.azure.net/validate"},
        "dataVersion": "2", "metadataVersion": "1",
    }]
    response = httpx.post(gateway.hook_url("azure-storage"), json=validation, headers={"aeg-event-type": "SubscriptionValidation"})
    assert (response.status_code, response.json()) == (200, {"validationResponse": code})


def test_the_cloudevents_options_handshake_grants_the_origin(gateway):
    response = httpx.options(gateway.hook_url("azure-storage"), headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
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


def test_an_unknown_webhook_is_404_and_lists_the_served_ones(gateway):
    response = httpx.post(gateway.hook_url("nope"), json={})
    assert response.status_code == 404
    assert "/hooks/mainframe" in response.json()["error"]


def test_health_reports_the_queue_and_that_prefect_is_reachable(gateway, prefect_server):
    health = gateway.health()
    assert health["prefect_reachable"] is True
    assert health["prefect_api_url"] == prefect_server.api_url
    assert health["max_events_per_second"] == 500
    assert isinstance(health["queued"], int) and health["rejected"] == 0
