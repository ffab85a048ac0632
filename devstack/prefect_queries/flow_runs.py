"""Find the flow run a kickoff started and wait for its state, the way tests and benchmarks check."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from devstack.supervision.processes import wait_until

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PAGE = 200


def read_deployment(api_url: str, flow_name: str, deployment_name: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{api_url}/deployments/name/{quote(flow_name)}/{quote(deployment_name)}", timeout=10
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


def runs_by_kickoff(api_url: str, deployment_id: str) -> dict[str, dict[str, Any]]:
    """The deployment's flow runs keyed by the kickoff event that started them."""
    runs: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=60) as client:
        for offset in range(0, 100 * PAGE, PAGE):
            response = client.post(
                f"{api_url}/flow_runs/filter",
                json={
                    "deployments": {"id": {"any_": [deployment_id]}},
                    "sort": "EXPECTED_START_TIME_ASC",
                    "limit": PAGE,
                    "offset": offset,
                },
            )
            response.raise_for_status()
            page = response.json()
            for run in page:
                runs[run["parameters"].get("kickoff_event_id")] = run
            if len(page) < PAGE:
                return runs
    return runs


def runs_by_tracking_id(api_url: str, deployment_id: str, after: datetime) -> dict[str, dict[str, Any]]:
    """The deployment's flow runs created after `after`, keyed by their `tracking_id` parameter.

    By parameter, not by name: a run gets its `<file_name> [<trackingId>]` name only when it starts.
    """
    response = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"expected_start_time": {"after_": after.isoformat()}},
            "limit": PAGE,
        },
        timeout=30,
    )
    response.raise_for_status()
    return {run["parameters"].get("tracking_id"): run for run in response.json()}


def wait_for_run(
    api_url: str, deployment_id: str, kickoff_id: str, states: set[str], timeout: float
) -> dict[str, Any]:
    """The run that kickoff `kickoff_id` started, once its state type is one of `states`."""

    def reached() -> dict[str, Any] | None:
        run = runs_by_kickoff(api_url, deployment_id).get(kickoff_id)
        return run if run and run["state_type"] in states else None

    wanted = "/".join(sorted(states))
    return wait_until(reached, timeout, f"the flow run of kickoff {kickoff_id} to be {wanted}", interval=0.25)


def final_state(api_url: str, deployment_id: str, kickoff_id: str, timeout: float) -> tuple[str, str]:
    """(state type, message) of the run that kickoff `kickoff_id` started, once it has finished."""
    run = wait_for_run(api_url, deployment_id, kickoff_id, FINAL_STATES, timeout)
    return run["state_type"], run["state"]["message"]


def count_runs(api_url: str, deployment_id: str, states: set[str], name_like: str | None = None) -> int:
    """How many of the deployment's flow runs are in one of `states`."""
    flow_runs: dict[str, Any] = {"state": {"type": {"any_": sorted(states)}}}
    if name_like:
        flow_runs["name"] = {"like_": name_like}
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "flow_runs": flow_runs}
    response = httpx.post(f"{api_url}/flow_runs/count", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def request_retrying(method: str, url: str, **options: Any) -> httpx.Response:
    """A request asked again while the server answers 503, as Prefect's own client does.

    A Prefect server on SQLite answers 503 to errors it calls retryable, e.g. "database is
    locked" while served runs write too. Other errors raise.
    """

    def answered() -> httpx.Response | None:
        response = httpx.request(method, url, timeout=30, **options)
        return None if response.status_code == 503 else response

    response = wait_until(answered, 60, f"{method} {url} to answer other than 503", interval=0.5)
    return response.raise_for_status()


def delete_retrying(url: str) -> None:
    request_retrying("DELETE", url)


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
