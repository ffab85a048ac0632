"""What a run leaves behind: artifact keys and the stage table, without a server."""

from datetime import UTC, datetime, timedelta

from prefect.events.schemas.events import Event

from devstack.prefect_queries import pipeline_events
from prefect_flows.report import artifact_key, stage_rows
from prefect_flows.stages import SUMMARY, TRANSFER


def test_artifact_keys_are_derived_from_the_tracking_id_and_valid():
    assert (
        artifact_key("aaa89264-c79c-11eb-b8bc-0242ac140007", "stages")
        == "file-aaa89264-c79c-11eb-b8bc-0242ac140007-stages"
    )
    assert artifact_key("Batch_42/EU", "summary") == "file-batch-42-eu-summary"
    assert artifact_key("--", "summary") == "file-unknown-summary"


def test_the_stage_table_has_the_kickoff_then_every_stage_seen_or_not():
    kicked_off_at = datetime(2024, 6, 1, 2, 0, tzinfo=UTC)
    transfer = Event.model_validate(pipeline_events.transfer("a.csv", "T-1"))
    transfer.occurred = kicked_off_at + timedelta(minutes=4, seconds=5)
    rows = stage_rows("k-1", kicked_off_at, {TRANSFER: transfer})
    assert rows[0] == {
        "stage": "kickoff",
        "event id": "k-1",
        "occurred": "2024-06-01T02:00:00+00:00",
        "after kickoff": "0.0 s",
    }
    assert rows[1] == {
        "stage": "transfer",
        "event id": str(transfer.id),
        "occurred": "2024-06-01T02:04:05+00:00",
        "after kickoff": "4 min 05 s",
    }
    assert [row["stage"] for row in rows[2:]] == [
        "Microsoft.Storage.BlobCreated",
        SUMMARY.event,
        "Reconciliation",
    ]
    assert all(row["occurred"] == "not seen" for row in rows[2:])
