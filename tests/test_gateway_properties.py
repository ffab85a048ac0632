"""Properties of the request path, against a real gateway and a real Prefect server (hypothesis).

Whatever the bytes, content type and headers: the answer is 204, 400, 401, 408, 413 or 422, never
a 5xx, and every 204 leaves exactly one event in Prefect (one per element for a split array).
"""

import json
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.prefect_queries.events import read_events, wait_for_events

ANSWERS = {204, 400, 401, 408, 413, 422}
CONFIG = """
[[webhooks]]
name = "whole"
template = "whole.json.j2"

[[webhooks]]
name = "split"
template = "split.json.j2"
split_array = true
"""
# Each request is marked by its own X-Example header, which names the resource of its events.
TEMPLATES = {
    "whole.json.j2": '{"event": "prop.whole", '
    '"resource": {"prefect.resource.id": "prop.{{ headers[\'x-example\'] }}"}, '
    '"payload": {"body": {{ body | tojson }}}}',
    "split.json.j2": '{"event": "prop.split", '
    '"resource": {"prefect.resource.id": "prop.{{ headers[\'x-example\'] }}"}, '
    '"payload": {"element": {{ body[0] | tojson }}}}',
}
# Headers the test sets itself, or that change how HTTP frames the request rather than what it says.
RESERVED = {
    "x-example",
    "idempotency-key",
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "expect",
    "te",
    "trailer",
    "upgrade",
    "aeg-event-type",
}
SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
bodies = st.binary(max_size=2048) | json_values.map(lambda value: json.dumps(value).encode())
# What HTTP allows in a header: a token for the name, visible characters and spaces for the value.
header_names = st.from_regex(r"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}\Z").filter(
    lambda name: name.lower() not in RESERVED
)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/cloudevents+json",
            "",
        ]
    )
    | header_values
)
headers = st.dictionaries(header_names, header_values, max_size=6)
methods = st.sampled_from(["POST", "PUT", "PATCH", "DELETE"])


@pytest.fixture(scope="module")
def property_gateway(start_gateway, prefect_server, tmp_path_factory):
    config_dir = tmp_path_factory.mktemp("property-config")
    (config_dir / "webhooks.toml").write_text(CONFIG)
    for name, text in TEMPLATES.items():
        (config_dir / name).write_text(text)
    return start_gateway(prefect_server.api_url, config=config_dir / "webhooks.toml")


def send(
    client: httpx.Client, url: str, method: str, body: bytes, content_type: str, extra: dict[str, str]
) -> tuple[str, int]:
    """Send one request marked with a fresh example id (its idempotency key too); the id and the status."""
    example = uuid.uuid4().hex
    sent = {**extra, "Content-Type": content_type, "X-Example": example, "Idempotency-Key": example}
    return example, client.request(method, url, content=body, headers=sent).status_code


def assert_events_per_example(api_url: str, event: str, expected: dict[str, int]) -> None:
    """Prefect holds exactly `expected[example]` events of each example.

    Forwarding keeps order: once the last example is in, all are.
    """
    wait_for_events(
        api_url,
        sum(expected.values()),
        [event],
        {"id": [f"prop.{example}" for example in expected]},
        timeout=60,
    )
    stored = read_events(api_url, [event], {"id": [f"prop.{example}" for example in expected]})
    counts = dict.fromkeys(expected, 0)
    for stored_event in stored:
        counts[stored_event["resource"]["prefect.resource.id"].removeprefix("prop.")] += 1
    assert counts == expected


def test_any_request_is_answered_without_a_5xx_and_each_204_is_one_event(property_gateway, prefect_server):
    accepted: dict[str, int] = {}
    with httpx.Client(timeout=30) as client:

        @SETTINGS
        @given(method=methods, body=bodies, content_type=content_types, extra=headers)
        def request(method: str, body: bytes, content_type: str, extra: dict[str, str]) -> None:
            example, status = send(
                client, property_gateway.hook_url("whole"), method, body, content_type, extra
            )
            assert status in ANSWERS
            if status == 204:
                accepted[example] = 1

        request()
    assert accepted, "no request was accepted: the property says nothing"
    assert_events_per_example(prefect_server.api_url, "prop.whole", accepted)


def test_any_json_array_to_a_split_webhook_is_one_event_per_element(property_gateway, prefect_server):
    accepted: dict[str, int] = {}
    with httpx.Client(timeout=30) as client:

        @settings(SETTINGS, max_examples=30)
        @given(elements=st.lists(json_values, max_size=8), extra=headers)
        def request(elements: list, extra: dict[str, str]) -> None:
            body = json.dumps(elements).encode()
            example, status = send(
                client, property_gateway.hook_url("split"), "POST", body, "application/json", extra
            )
            assert status in ANSWERS
            if status == 204 and elements:
                accepted[example] = len(elements)

        request()
    assert accepted, "no array was accepted: the property says nothing"
    assert_events_per_example(prefect_server.api_url, "prop.split", accepted)
