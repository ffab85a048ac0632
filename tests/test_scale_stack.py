"""The scale stack: Prefect on PostgreSQL and Redis with its services apart, the flow served as coroutines.

The demo's scenarios (succeed, mismatch, overdue), and a burst of them, play through the whole
pipeline on it: the demo's mainframe simulator, the Function App in the host stand-in and the
consumer stand-in, on an Azurite of their own, send to the scale stack's gateway.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from configuration import REPO_ROOT
from demo.scenarios import NEVER_ANSWER, SCENARIOS, Observation, ScenarioPlayer
from demo.stack import DemoStack, Ports, StackOptions
from devstack.scale_stack import ScaleStack
from devstack.services.datastores import Postgres
from devstack.supervision.process_stats import alive, descendants
from devstack.supervision.processes import ServiceError, free_port, wait_until
from simulators.mainframe import Mainframe
from tests.conftest import SCALE_DEADLINE_SECONDS
from webhooks.provisioning import write_env_file


@pytest.fixture(scope="module")
def senders(scale_stack: ScaleStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    """The demo's Azurite, Function App (host stand-in) and consumer stand-in, sending to the scale stack."""
    work = tmp_path_factory.mktemp("scale-senders")
    ports = Ports(scale_stack.prefect.port, scale_stack.gateway.port, free_port(), free_port(), free_port())
    options = StackOptions(work, work / "webhooks.env", ports, SCALE_DEADLINE_SECONDS, NEVER_ANSWER)
    demo = DemoStack(options, Console(file=io.StringIO()))
    write_env_file(options.env_file, demo.gateway_settings())
    try:
        demo.start_azurite()
        demo.start_function_app()
        demo.start_consumer()
        yield demo
    finally:
        for process in (demo.consumer, demo.function_app):
            if process:
                process.stop()
        demo.azurite.stop()


def play(stack: ScaleStack, senders: DemoStack, copies: int) -> list[Observation]:
    """Play the demo's scenarios `copies` times over, all at once; what the Prefect API shows of each."""
    mainframe = Mainframe.configured(senders.options.env_file, environ=senders.app_settings())
    deployment = stack.flows.deployment()
    assert deployment is not None, "the scale stack deployed the flow"
    player = ScenarioPlayer(stack.prefect.api_url, deployment["id"], mainframe, Console())
    return player.play(SCENARIOS * copies, timeout=SCALE_DEADLINE_SECONDS + 60 + 4 * copies)


def unexpected(observations: list[Observation]) -> list[tuple[str, str, str, str]]:
    return [(o.scenario.name, o.tracking_id, o.state, o.message) for o in observations if not o.as_expected]


def psql(stack: ScaleStack, query: str) -> str:
    result = stack.postgres.run_client("psql", "-d", stack.postgres.database, "-tA", "-c", query)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


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


def test_the_demo_scenarios_end_as_expected_with_prefect_on_postgres_and_redis(scale_stack, senders):
    observations = play(scale_stack, senders, 1)
    assert [o.scenario.name for o in observations] == ["succeed", "mismatch", "overdue"]
    assert unexpected(observations) == []
    # Where they went: Prefect's API and services apart, the events through Redis into PostgreSQL.
    api, services = scale_stack.prefect.process, scale_stack.prefect.services
    assert "--no-services" in api.argv and services.argv[-3:] == ["server", "services", "start"]
    with scale_stack.redis.client() as redis:
        consumers = {group["name"]: group["consumers"] for group in redis.xinfo_groups("events")}
    assert consumers["event-persister"] >= 1 and consumers["reactive-triggers"] >= 1
    query = f"SELECT event FROM events WHERE resource->>'trackingId' = '{observations[0].tracking_id}'"
    expected = ["Reconciliation", "Summary", "kickoff", "reconciliation.matched", "transfer"]
    # The flow's own outcome event is stored a moment after its run ends.
    wait_until(lambda: sorted(psql(scale_stack, query).split()) == expected, 30, f"{expected} in PostgreSQL")


def test_a_burst_of_files_ends_with_every_outcome_right_in_one_serving_process(scale_stack, senders):
    observations = play(scale_stack, senders, 10)
    assert len(observations) == 30
    assert unexpected(observations) == []
    # One process followed them all: serve.py started no process per run.
    assert descendants(scale_stack.flows.process.pid) == []


@pytest.mark.services  # starts the whole stack itself
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
        ours = descendants(command.pid)
        # postgres, redis, the API, the services, serve.py, the gateway (and their children)
        assert len(ours) >= 6, ours
        command.send_signal(signal.SIGINT)
        assert command.wait(60) == 0
        wait_until(lambda: not any(alive(pid) for pid in ours), 10, "every process of the stack to exit")
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
        command.stdout.close()
        shutil.rmtree(postgres_dir, ignore_errors=True)
