"""The patches the coroutine runner makes to Prefect's engine fail loudly when Prefect changes underneath.

Their effect is checked with real runs elsewhere: no thread per waiting run
(tests/test_coroutine_serving.py), and the server asked for its result storage once per
process (bench/bench_flow.py's `api_calls`).
"""

from __future__ import annotations

import inspect

import prefect.flow_engine
import prefect.results
import pytest

from prefect_flows import engine_patches


def test_the_engine_still_opens_its_suspension_observer_and_reads_the_storage_where_the_patches_act():
    # If Prefect moves these calls elsewhere, the patches stop acting while still applying cleanly.
    assert "observe_flow_run_suspension(" in inspect.getsource(
        prefect.flow_engine.BaseFlowRunEngine.setup_flow_run_suspension_request
    )
    assert "_read_server_default_result_storage_block_id()" in inspect.getsource(
        prefect.results._get_default_result_storage
    )
    assert "_aread_server_default_result_storage_block_id()" in inspect.getsource(
        prefect.results._aget_default_result_storage
    )


def test_a_prefect_without_what_is_patched_stops_serving_naming_it_and_what_to_do(monkeypatch):
    monkeypatch.delattr(prefect.flow_engine, "observe_flow_run_suspension")
    with pytest.raises(engine_patches.EngineChanged) as raised:
        engine_patches.apply()
    message = str(raised.value)
    assert "prefect.flow_engine.observe_flow_run_suspension" in message
    assert "FLOW_SERVING=process" in message and "prefect==3.9.1" in message


def test_the_storage_lookup_is_made_once_however_often_it_is_asked(monkeypatch):
    for module, name in engine_patches._PATCHED:  # restored after the test
        monkeypatch.setattr(module, name, getattr(module, name))
    answers = iter(["first", "second"])
    monkeypatch.setattr(
        prefect.results, "_read_server_default_result_storage_block_id", lambda: next(answers)
    )
    monkeypatch.setattr(prefect.flow_engine, "observe_flow_run_suspension", lambda *a, **k: None)
    engine_patches.apply()
    read = prefect.results._read_server_default_result_storage_block_id
    assert [read(), read(), read()] == ["first", "first", "first"]
    with prefect.flow_engine.observe_flow_run_suspension("a run", "a request"):
        pass  # the observer is a no-op context
