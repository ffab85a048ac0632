"""The reconciliation rules: counts as strings compared as integers, duplicates, conflicts."""

from prefect.events.schemas.events import Event

from devstack.prefect_queries import pipeline_events
from prefect_flows.reconcile import format_duration, overdue, reconcile
from prefect_flows.stages import RECONCILIATION, TRANSFER


def summary(count: int | str) -> Event:
    return Event.model_validate(pipeline_events.summary("T-1", count))


def receipt(count: int | str) -> Event:
    return Event.model_validate(pipeline_events.reconciliation("T-1", count))


def test_equal_counts_match():
    verdict = reconcile([summary(123)], [receipt("123")])
    assert (verdict.outcome, verdict.message, verdict.succeeded) == (
        "matched",
        "123 records sent, 123 received",
        True,
    )


def test_counts_compare_as_integers_not_strings():
    assert reconcile([summary("0123")], [receipt(" 123 ")]).outcome == "matched"
    assert reconcile([summary(9)], [receipt(10)]).message == "sent 9, received 10 (1 extra)"


def test_fewer_received_says_how_many_are_missing():
    verdict = reconcile([summary(123)], [receipt(122)])
    assert (verdict.outcome, verdict.message) == ("mismatched", "sent 123, received 122 (1 missing)")
    assert (verdict.sent, verdict.received, verdict.succeeded) == (123, 122, False)


def test_a_count_that_is_not_a_whole_number_is_invalid_and_named():
    bad = receipt("12x")
    verdict = reconcile([summary(12)], [bad])
    assert verdict.outcome == "invalid"
    assert (
        verdict.message
        == f"Reconciliation event {bad.id} has totalRecordsReceived '12x', which is not a whole number"
    )
    for raw in ("", "-3", "1.5", "1e3"):
        assert reconcile([summary(raw)], [receipt(1)]).outcome == "invalid"


def test_a_missing_count_label_is_invalid():
    bare = summary(1)
    del bare.resource.root["totalRecordsSent"]
    assert reconcile([bare], [receipt(1)]).message == f"Summary event {bare.id} has no totalRecordsSent"


def test_an_exact_duplicate_is_a_redelivery_and_fine():
    assert reconcile([summary(7), summary(7)], [receipt(7), receipt(7)]).outcome == "matched"


def test_duplicates_that_disagree_are_a_conflict_naming_both_counts():
    first, second = summary(100), summary(101)
    verdict = reconcile([first, second], [receipt(100)])
    assert verdict.outcome == "invalid"
    assert verdict.message == (
        f"2 Summary events for this trackingId disagree on totalRecordsSent: "
        f"100 (event {first.id}), 101 (event {second.id})"
    )


def test_every_problem_is_reported_at_once():
    verdict = reconcile([summary("x")], [receipt(1), receipt(2)])
    assert "Summary event" in verdict.message and "2 Reconciliation events" in verdict.message


def test_overdue_names_every_missing_stage_and_how_long_it_waited():
    verdict = overdue({TRANSFER: 3600, RECONCILIATION: 10800}, waited_seconds=3601)
    assert verdict.outcome == "overdue"
    assert verdict.message == (
        "overdue: waited 1 h 00 min after kickoff, never saw transfer (deadline 1 h 00 min), "
        "Reconciliation (deadline 3 h 00 min)"
    )


def test_durations_read_at_a_glance():
    assert [format_duration(s) for s in (0, 12.34, 65, 7325, -2)] == [
        "0.0 s",
        "12.3 s",
        "1 min 05 s",
        "2 h 02 min",
        "-2.0 s",
    ]
