"""The scale stack: Prefect on PostgreSQL and Redis with its services apart, the flow on two workers.

The demo's scenarios (succeed, mismatch, overdue) and a burst of files go through the stack's
webhook gateway, as the mainframe, the Function App and the consumer send them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import SCALE_DEADLINE_SECONDS

from devstack import webhook_files
from devstack.datastores import Postgres, postgres_bin_dir
from devstack.flow_runs import FINAL_STATES, runs_named
from devstack.prefect_api import read_events
from devstack.processes import ServiceError, wait_until
from devstack.scale_stack import ScaleStack
from devstack.services import REPO_ROOT
from devstack.webhook_files import WebhookFile


def play(stack: ScaleStack, files: list[WebhookFile]) -> dict[str, dict]:
    """Send the files through the gateway; their flow runs by name once every one has ended."""
    webhook_files.send(stack.gateway.url, [request for file in files for request in file.requests()])
    deployment_id = stack.pool.deployment()["id"]
    names = [file.run_name for file in files]

    def ended() -> dict[str, dict] | None:
        runs = runs_named(stack.prefect.api_url, deployment_id, names)
        return runs if sum(run["state_type"] in FINAL_STATES for run in runs.values()) == len(files) else None

    return wait_until(
        ended, SCALE_DEADLINE_SECONDS + 60 + 3 * len(files), f"{len(files)} runs to end", interval=1
    )


def psql(stack: ScaleStack, query: str) -> str:
    postgres = stack.postgres
    argv = [
        str(postgres_bin_dir() / "psql"),
        "-h",
        postgres.host,
        "-p",
        str(postgres.port),
        "-U",
        postgres.user,
    ]
    result = subprocess.run(
        [*argv, "-d", postgres.database, "-tA", "-c", query], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_prefect_keeps_its_data_in_postgres_and_its_events_flow_through_redis(scale_stack):
    [file] = webhook_files.plan(1, "store", ("succeed",))
    play(scale_stack, [file])
    query = f"SELECT event FROM events WHERE resource->>'trackingId' = '{file.tracking_id}'"
    expected = ["Reconciliation", "Summary", "kickoff", "reconciliation.matched", "transfer"]
    # The flow's own outcome event is stored a moment after its run ends.
    wait_until(lambda: sorted(psql(scale_stack, query).split()) == expected, 30, f"{expected} in PostgreSQL")
    with scale_stack.redis.client() as redis:
        consumers = {group["name"]: group["consumers"] for group in redis.xinfo_groups("events")}
    assert consumers["event-persister"] >= 1 and consumers["reactive-triggers"] >= 1
    api, services = scale_stack.prefect.process, scale_stack.prefect.services
    assert "--no-services" in api.argv and services.argv[-3:] == ["server", "services", "start"]
    assert services.running() and api.running()


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when we are root")
def test_postgres_runs_as_its_own_user_when_we_are_root(scale_stack):
    owner = subprocess.run(
        ["ps", "-o", "user=", "-p", str(scale_stack.postgres.process.pid)], capture_output=True, text=True
    ).stdout.strip()
    assert owner == "postgres"


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when we are root")
def test_a_data_directory_postgres_cannot_reach_is_named_with_what_to_do(tmp_path):
    # pytest's temporary directories are private to root.
    with pytest.raises(ServiceError, match=f"who cannot reach {tmp_path / 'pg'}: .* --postgres-dir"):
        Postgres(tmp_path / "pg", tmp_path).start()


def test_the_demo_scenarios_end_as_expected_on_the_work_pool(scale_stack):
    files = webhook_files.plan(3, "scenario")
    assert [file.scenario for file in files] == ["succeed", "mismatch", "overdue"]
    runs = play(scale_stack, files)
    assert [file.judge(runs.get(file.run_name)) for file in files] == [None, None, None]


def test_a_burst_of_files_ends_with_every_outcome_right_on_both_workers(scale_stack):
    started = datetime.now(UTC)
    files = webhook_files.plan(30, "burst")
    runs = play(scale_stack, files)
    assert [problem for file in files if (problem := file.judge(runs.get(file.run_name)))] == []
    assert len(runs) == len(files)
    # Which worker ran each run: the worker's own event names the run it submitted.
    ours = {f"prefect.flow-run.{run['id']}" for run in runs.values()}
    workers = [f"prefect.worker.process.{process.name}" for process in scale_stack.pool.processes]
    submitted = read_events(
        scale_stack.prefect.api_url, ["prefect.worker.submitted-flow-run"], {"id": workers}, since=started
    )
    by_worker = {worker: 0 for worker in workers}
    for event in submitted:
        if any(related["prefect.resource.id"] in ours for related in event["related"]):
            by_worker[event["resource"]["prefect.resource.id"]] += 1
    assert sum(by_worker.values()) == len(files)
    assert all(by_worker.values()), f"runs per worker: {by_worker}"


def test_the_command_stops_everything_it_started_on_ctrl_c(tmp_path):
    postgres_dir = Path(tempfile.mkdtemp(prefix="scale-postgres-"))
    command = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.scale_stack",
            "--data-dir",
            str(tmp_path),
            "--postgres-dir",
            str(postgres_dir),
            "--prefect-port",
            "0",
            "--gateway-port",
            "0",
            "--workers",
            "1",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = []
        for line in command.stdout:
            output.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        assert "Press Ctrl-C to stop" in "".join(output), "".join(output)
        ours = children(command.pid)
        assert len(ours) >= 6, (
            ours
        )  # postgres, redis, API, services, a worker, the gateway (and their children)
        command.send_signal(signal.SIGINT)
        assert command.wait(60) == 0
        wait_until(lambda: not any(alive(pid) for pid in ours), 10, "every process of the stack to exit")
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
        command.stdout.close()
        shutil.rmtree(postgres_dir, ignore_errors=True)


def children(root: int) -> list[int]:
    """Every process below `root`."""
    listing = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    parent_of = dict(zip(map(int, listing[::2]), map(int, listing[1::2]), strict=True))
    found, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, ppid in parent_of.items() if ppid in frontier}
        found += frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
