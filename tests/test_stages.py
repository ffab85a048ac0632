"""Which event proves which stage of which file: the matching rules, without a server."""

from prefect.events.schemas.events import Event

from devstack.prefect_queries import pipeline_events
from prefect_flows.stages import BLOB_CREATED, RECONCILIATION, STAGES, TrackedFile

FILE = TrackedFile("daily-sales.csv", "T-1")


def event(raw: dict) -> Event:
    return Event.model_validate(raw)


def test_each_stage_is_proved_by_the_files_own_event():
    proofs = [event(raw) for raw in pipeline_events.stages("daily-sales.csv", "T-1", 5, 5)]
    assert [[FILE.proves(stage, proof) for stage in STAGES] for proof in proofs] == [
        [True, False, False, False],
        [False, True, False, False],
        [False, False, True, False],
        [False, False, False, True],
    ]


def test_events_of_another_tracking_id_prove_nothing():
    for raw in pipeline_events.stages("daily-sales.csv", "T-2", 5, 5)[::2]:  # transfer, Summary
        assert not FILE.concerns(event(raw))
    assert not FILE.proves(RECONCILIATION, event(pipeline_events.reconciliation("T-2", 5)))


def test_the_kickoff_itself_proves_no_stage():
    assert not FILE.concerns(event(pipeline_events.kickoff("daily-sales.csv", "T-1")))


def test_a_blob_matches_by_the_last_part_of_its_url_even_when_encoded_or_in_a_folder():
    spaced = TrackedFile("daily sales.csv", "T-1")
    assert spaced.proves(BLOB_CREATED, event(pipeline_events.blob_created("daily%20sales.csv")))
    assert FILE.proves(BLOB_CREATED, event(pipeline_events.blob_created("2024/06/daily-sales.csv")))


def test_a_blob_whose_name_only_ends_like_the_file_is_another_file():
    assert not FILE.proves(BLOB_CREATED, event(pipeline_events.blob_created("old-daily-sales.csv")))
    assert not FILE.proves(BLOB_CREATED, event(pipeline_events.blob_created("daily-sales.csv.bak")))


def test_a_blob_event_that_carries_a_tracking_id_must_carry_this_one():
    raw = pipeline_events.blob_created("daily-sales.csv")
    raw["resource"]["trackingId"] = "T-2"
    assert not FILE.proves(BLOB_CREATED, event(raw))
    raw["resource"]["trackingId"] = "T-1"
    assert FILE.proves(BLOB_CREATED, event(raw))


def test_a_kickoff_without_tracking_id_or_file_name_is_reported():
    assert TrackedFile("a.csv", "T-1").problems() == []
    assert TrackedFile(" ", "").problems() == [
        "the kickoff event has no file_name label (or it is empty)",
        "the kickoff event has no trackingId label (or it is empty)",
    ]


def test_later_stages_get_later_default_deadlines():
    deadlines = [stage.default_deadline_seconds for stage in STAGES]
    assert deadlines == sorted(deadlines) and len(set(deadlines)) == len(STAGES)
