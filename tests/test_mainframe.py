"""The mainframe simulator's command line, against the session's gateway, Prefect server and Azurite."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from configuration import REPO_ROOT
from devstack.prefect_queries.events import read_events, wait_for_events
from file_relay.settings import SETTINGS
from simulators.ledger import ledger, malformed_positions, problem
from webhooks.catalog import load_catalog
from webhooks.provisioning import gateway_urls, sender_settings, write_env_file


class MainframeCli:
    """`python -m simulators.mainframe` with an env file for the gateway and a container of its own."""

    def __init__(self, gateway, azurite, tmp_path: Path) -> None:
        self.env_file = tmp_path / "webhooks.env"
        write_env_file(
            self.env_file,
            sender_settings(gateway_urls(load_catalog(), gateway.host, gateway.port), environ={}),
        )
        self.connection_string = azurite.connection_string
        self.container = BlobServiceClient.from_connection_string(
            azurite.connection_string
        ).get_container_client(f"mainframe-{uuid.uuid4().hex[:10]}")
        self.container.create_container()

    def __call__(self, *args: str, env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {name: value for name, value in os.environ.items() if name not in {s.name for s in SETTINGS}}
        env["INCOMING_CONTAINER"] = self.container.container_name
        argv = [sys.executable, "-m", "simulators.mainframe", "--env-file", str(env_file or self.env_file)]
        argv += ["--connection-string", self.connection_string, *args]
        return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def mainframe(gateway, azurite, tmp_path) -> MainframeCli:
    return MainframeCli(gateway, azurite, tmp_path)


def mainframe_events(api_url: str, tracking_id: str, count: int) -> list[dict]:
    return wait_for_events(
        api_url, count, ["kickoff", "transfer"], resource={"labels": {"trackingId": [tracking_id]}}
    )


def test_run_posts_kickoff_then_transfer_and_uploads_a_generated_file_with_its_tracking_id(
    mainframe, prefect_server
):
    tracking_id = f"T-mainframe-{uuid.uuid4().hex[:8]}"

    result = mainframe(
        "run",
        "--records",
        "10",
        "--malformed",
        "2",
        "--name",
        "daily/ledger.csv",
        "--tracking-id",
        tracking_id,
    )

    assert result.returncode == 0, result.stderr
    assert "malformed: record 3, 8" in result.stdout
    blob = mainframe.container.get_blob_client("daily/ledger.csv")
    assert blob.get_blob_properties().metadata == {"trackingId": tracking_id}
    records = blob.download_blob().readall().decode().splitlines()
    assert records == ledger(10, malformed=2).decode().splitlines()
    assert (
        [n for n, record in enumerate(records, 1) if problem(record)] == malformed_positions(10, 2) == [3, 8]
    )
    kickoff, transfer = mainframe_events(prefect_server.api_url, tracking_id, 2)
    assert (kickoff["event"], kickoff["resource"]["stage"]) == ("kickoff", "on-prem")
    assert (transfer["event"], transfer["resource"]["stage"]) == ("transfer", "distributed")
    assert kickoff["resource"]["file_name"] == transfer["resource"]["file_name"] == "daily/ledger.csv"


def test_upload_of_a_given_file_keeps_its_bytes_and_names_the_blob_after_it(mainframe, tmp_path):
    source = tmp_path / "mine.csv"
    source.write_bytes(b"anything at all\r\nsecond line")

    result = mainframe("upload", "--file", str(source), "--tracking-id", "T-given")

    assert result.returncode == 0, result.stderr
    blob = mainframe.container.get_blob_client("mine.csv")
    assert blob.download_blob().readall() == b"anything at all\r\nsecond line"
    assert blob.get_blob_properties().metadata == {"trackingId": "T-given"}


def test_the_same_step_sent_twice_makes_one_event(mainframe, prefect_server):
    tracking_id = f"T-twice-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        assert mainframe("kickoff", "--file-name", "twice.csv", "--tracking-id", tracking_id).returncode == 0
    assert mainframe("transfer", "--file-name", "twice.csv", "--tracking-id", tracking_id).returncode == 0

    # The gateway forwards in order: once the transfer is in Prefect, a second kickoff would be too.
    mainframe_events(prefect_server.api_url, tracking_id, 2)
    events = read_events(
        prefect_server.api_url, ["kickoff"], resource={"labels": {"trackingId": [tracking_id]}}
    )
    assert len(events) == 1


def test_a_missing_env_file_says_how_to_write_it(mainframe, tmp_path):
    result = mainframe("kickoff", "--file-name", "x.csv", env_file=tmp_path / "nowhere.env")

    assert result.returncode == 1
    assert "nowhere.env not found" in result.stderr
    assert "python -m webhooks provision --local" in result.stderr


def test_an_upload_to_a_missing_container_names_the_container_and_the_setting(mainframe):
    mainframe.container.delete_container()

    result = mainframe("upload", "--records", "3", "--tracking-id", "T-lost")

    assert result.returncode == 1
    assert f"container '{mainframe.container.container_name}' does not exist" in result.stderr
    assert "INCOMING_CONTAINER" in result.stderr


def test_malformed_records_apply_only_to_generated_files(mainframe, tmp_path):
    source = tmp_path / "given.csv"
    source.write_text("1,ACCT-0001,1.00\n")

    result = mainframe("upload", "--file", str(source), "--malformed", "1")

    assert result.returncode == 1
    assert "--malformed garbles generated records" in result.stderr
