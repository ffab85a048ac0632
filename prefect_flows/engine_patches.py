"""The two changes to Prefect's engine that thousands of flow runs in one process need, and nothing else.

Prefect 3.9's engine assumes one flow run per process. Run as coroutines of one process, two of
its per-run costs would dominate, and no setting turns them off:

- every deployment run gets a suspension observer: a thread with its own event loop, client and
  `/events/out` websocket. A Prefect server on SQLite serves 100 requests at once, websockets
  included, so about 99 waiting runs hang it. The reconciliation flow never suspends, and a
  cancelled run is noticed by the serving process itself (prefect_flows/coroutine_runner.py).
- every run reads the server's default result storage (`GET /admin/storage`) with a blocking
  client on the event loop. The flow persists no results; once per process is plenty.

(Per-run heartbeat threads are turned off by a setting, `flows.heartbeat_frequency`, in the
serving process.) `apply()` fails loudly, naming what moved, when Prefect changes underneath;
tests/test_coroutine_runner.py checks both effects against a real server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import prefect.flow_engine
import prefect.results

_PATCHED = (
    (prefect.flow_engine, "observe_flow_run_suspension"),
    (prefect.results, "_read_server_default_result_storage_block_id"),
    (prefect.results, "_aread_server_default_result_storage_block_id"),
)


class EngineChanged(RuntimeError):
    """This Prefect release no longer has what the coroutine runner patches."""


def apply() -> None:
    """Patch the engine for many runs in one process (idempotent)."""
    missing = [f"{module.__name__}.{name}" for module, name in _PATCHED if not hasattr(module, name)]
    if missing:
        raise EngineChanged(
            f"Prefect {prefect.__version__} has no {', '.join(missing)}: the coroutine runner was "
            "written for 3.9.1 (see prefect_flows/engine_patches.py). Serve with FLOW_SERVING=process "
            "or pin prefect==3.9.1."
        )
    if getattr(prefect.flow_engine.observe_flow_run_suspension, "_patched", False):
        return
    prefect.flow_engine.observe_flow_run_suspension = _marked(_no_suspension_observer)
    prefect.results._read_server_default_result_storage_block_id = _marked(
        _once(prefect.results._read_server_default_result_storage_block_id)
    )
    prefect.results._aread_server_default_result_storage_block_id = _marked(
        _once_async(prefect.results._aread_server_default_result_storage_block_id)
    )


def _no_suspension_observer(*args: Any, **kwargs: Any) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def _once(read: Callable[[], Any]) -> Callable[[], Any]:
    answers: list[Any] = []

    def read_once() -> Any:
        if not answers:
            answers.append(read())
        return answers[0]

    return read_once


def _once_async(read: Callable[[], Any]) -> Callable[[], Any]:
    answers: list[Any] = []

    async def read_once() -> Any:
        if not answers:
            answers.append(await read())
        return answers[0]

    return read_once


def _marked(function: Callable[..., Any]) -> Callable[..., Any]:
    function._patched = True  # type: ignore[attr-defined]
    return function
