"""serve.py restarts cleanly, and deploy.py puts the flow in a work pool whose worker runs it.

Both run against a private Prefect server: they stop runners and re-register the deployment,
which must not disturb the session's server.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from devstack.prefect_queries import pipeline_events as events
from devstack.prefect_queries.flow_runs import final_state, wait_for_run
from devstack.services import REPO_ROOT, prefect_cli
from devstack.services.flow_server import FlowServer
from devstack.supervision.processes import ManagedProcess

POOL = "files"


@pytest.fixture(scope="module")
def private_server(start_prefect_server):
    return start_prefect_server()


def post_file(api_url: str, sent: int, received: int) -> str:
    """Post a whole file's journey at once; the kickoff's id."""
    kickoff = events.kickoff("restart.csv", tracking_id := f"T-{os.urandom(4).hex()}")
    events.post_events(api_url, [kickoff, *events.stages("restart.csv", tracking_id, sent, received)])
    return kickoff["id"]


def test_a_restarted_serve_resumes_its_paused_deployment_and_runs_kickoffs_sent_while_it_was_down(
    private_server, service_logs, tmp_path
):
    api = private_server.api_url
    # Started from another directory, too: its runs must still find their code.
    flow = FlowServer(private_server, service_logs, name="flow-server-restart", cwd=tmp_path).start()
    try:
        flow.stop()
        deployment = flow.deployment()
        assert deployment["paused"] is False, "stopping serve.py must not pause the deployment"
        # As an older runner, or a person in the UI, would have left it:
        httpx.post(f"{api}/deployments/{deployment['id']}/pause_deployment", timeout=10).raise_for_status()
        kickoff_id = post_file(api, 8, 8)
        wait_for_run(api, deployment["id"], kickoff_id, {"SCHEDULED"}, timeout=30)

        flow.start()
        assert flow.deployment()["paused"] is False
        assert final_state(api, deployment["id"], kickoff_id, timeout=90) == (
            "COMPLETED",
            "8 records sent, 8 received",
        )
    finally:
        flow.stop()
        flow.remove_deployment()


def deploy(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "prefect_flows/deploy.py", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PREFECT_API_URL": api_url, "FLOW_SUMMARY_DEADLINE_SECONDS": "45"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_names_a_missing_work_pool_and_how_to_create_it(private_server):
    result = deploy(private_server.api_url, "--pool", "no-such-pool")
    assert result.returncode == 1
    assert "Could not find work pool 'no-such-pool'" in result.stderr
    assert "prefect work-pool create no-such-pool --type process" in result.stderr


def test_runs_cancelled_by_a_stopping_process_runner_are_followed_again_by_the_next(
    private_server, service_logs
):
    api = private_server.api_url
    flow = FlowServer(
        private_server, service_logs, settings={"FLOW_SERVING": "process"}, name="process-serve"
    ).start()
    try:
        deployment = flow.deployment()
        kickoff = events.kickoff("resumed.csv", tracking_id := f"T-{os.urandom(4).hex()}")
        events.post_events(api, [kickoff])
        wait_for_run(api, deployment["id"], kickoff["id"], {"RUNNING"}, timeout=60)
        flow.stop()
        # Prefect's runner cancels its runs as it stops; the recovery automation schedules them again.
        run = wait_for_run(api, deployment["id"], kickoff["id"], {"SCHEDULED"}, timeout=60)
        assert run["state_name"] == "Resuming"
        events.post_events(api, events.stages("resumed.csv", tracking_id, 6, 6))
        flow.start()
        assert final_state(api, deployment["id"], kickoff["id"], timeout=120) == (
            "COMPLETED",
            "6 records sent, 6 received",
        )
    finally:
        flow.stop()
        flow.remove_deployment()


def test_a_deployed_flow_runs_kickoffs_on_a_process_worker_and_resumes_those_a_stopped_worker_left(
    private_server, service_logs, tmp_path
):
    api = private_server.api_url
    httpx.post(f"{api}/work_pools/", json={"name": POOL, "type": "process"}, timeout=10).raise_for_status()
    result = deploy(api, "--pool", POOL)
    assert result.returncode == 0, result.stderr
    assert "Deployed 'reconcile-file/Event Driven Flow'" in result.stdout

    flow = FlowServer(private_server, service_logs)
    deployment = flow.deployment()
    assert deployment["work_pool_name"] == POOL
    assert deployment["parameters"]["summary_deadline_seconds"] == 45
    # The worker starts elsewhere: the deployment says where the code is.
    worker = ManagedProcess(
        "worker",
        [prefect_cli(), "worker", "start", "--pool", POOL],
        service_logs / "worker.log",
        env={**os.environ, **private_server.client_env(), "PREFECT_WORKER_QUERY_SECONDS": "1"},
        cwd=tmp_path,
    )
    try:
        worker.start()
        kickoff_id = post_file(api, 3, 2)
        assert final_state(api, deployment["id"], kickoff_id, timeout=120) == (
            "FAILED",
            "sent 3, received 2 (1 missing)",
        )

        # A worker stopped with its process group (as systemd stops it) leaves its run Running:
        # its heartbeats stop, the server marks it Crashed, then schedules it again.
        kickoff = events.kickoff("left.csv", tracking_id := f"T-{os.urandom(4).hex()}")
        events.post_events(api, [kickoff])
        wait_for_run(api, deployment["id"], kickoff["id"], {"RUNNING"}, timeout=120)
        worker.stop()
        run = wait_for_run(api, deployment["id"], kickoff["id"], {"SCHEDULED"}, timeout=240)
        assert run["state_name"] == "Resuming"
        events.post_events(api, events.stages("left.csv", tracking_id, 4, 4))
        worker.start()
        assert final_state(api, deployment["id"], kickoff["id"], timeout=120) == (
            "COMPLETED",
            "4 records sent, 4 received",
        )
    finally:
        worker.stop()
        flow.remove_deployment()
