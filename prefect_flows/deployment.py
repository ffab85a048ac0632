"""How the reconciliation flow is deployed: its name, the Kickoff trigger and the settings.

Settings are environment variables, read once here (see the README's flow section):
FLOW_SERVING, FLOW_POLL_SECONDS, FLOW_RUN_LIMIT, FLOW_UNANNOUNCED_GRACE_SECONDS and one
FLOW_<STAGE>_DEADLINE_SECONDS per stage.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from prefect.events import DeploymentEventTrigger
from prefect.settings import PREFECT_API_URL

from prefect_flows.stages import STAGES

DEPLOYMENT_NAME = "Event Driven Flow"
# A Prefect server on SQLite serves at most 100 requests at once, and every open websocket holds
# one: a waiting run holds two or three (its event stream, Prefect's event sender). Measured
# here: the server stopped answering at about 33 waiting runs.
SQLITE_SAFE_RUN_LIMIT = 25
ENTRYPOINT = "prefect_flows/flow.py:reconcile_file"


class SettingsError(ValueError):
    """A setting has a value the flow cannot use; the message names the setting."""


def kickoff_trigger() -> DeploymentEventTrigger:
    """The original example's Kickoff trigger, also handing the run its kickoff event's id and time.

    The run needs the kickoff's `occurred` to measure deadlines and to read stage events that
    came before it started. Taking it from the triggering event is exact and immediate; reading
    the kickoff back by trackingId would wait for the event persister and be ambiguous when a
    kickoff is sent twice.
    """
    return DeploymentEventTrigger(
        name="Kickoff",
        match={"prefect.resource.id": "prefect.webhook.mainframe", "stage": "on-prem"},
        parameters={
            "file_name": "{{ event.resource.file_name }}",
            "tracking_id": "{{ event.resource.trackingId }}",
            # `|string`: a bare UUID or datetime cannot be rendered into a parameter.
            "kickoff_event_id": "{{ event.id|string }}",
            "kicked_off_at": "{{ event.occurred|string }}",
        },
    )


def api_url() -> str:
    """The Prefect API to register with; without one Prefect would quietly start a throwaway server."""
    url = PREFECT_API_URL.value()
    if not url:
        raise SettingsError(
            "PREFECT_API_URL is not set: point it at your Prefect server "
            "(e.g. http://127.0.0.1:4200/api) or Prefect Cloud workspace"
        )
    return url


def deadline_setting(parameter: str) -> str:
    """`transfer_deadline_seconds` -> `FLOW_TRANSFER_DEADLINE_SECONDS`."""
    return f"FLOW_{parameter.upper()}"


def same_deadlines(seconds: float) -> dict[str, str]:
    """The FLOW_*_DEADLINE_SECONDS settings that give every stage `seconds` (demos, tests, benchmarks)."""
    return {deadline_setting(stage.deadline_parameter): f"{seconds:g}" for stage in STAGES}


SERVING_MODES = ("coroutine", "process")
# Files followed at once. A coroutine costs well under 1 MiB; a process ~76 MiB and websockets
# that a Prefect server on SQLite can hold about 30 of.
DEFAULT_RUN_LIMITS = {"coroutine": 5000, "process": 20}


@dataclass(frozen=True)
class FlowSettings:
    """How `serve.py` runs the flow: serving mode, poll interval, concurrency, deadlines, unannounced files."""

    serving: str = "coroutine"
    # Prefect's runner polls every 10 s by default; a kickoff should start a run within ~1 s.
    poll_seconds: float = 0.5
    run_limit: int = DEFAULT_RUN_LIMITS["coroutine"]
    # A blob or Summary with no kickoff this long after it is reported (coroutine serving).
    unannounced_grace_seconds: float = 600
    deadlines: dict[str, float] = field(
        default_factory=lambda: {stage.deadline_parameter: stage.default_deadline_seconds for stage in STAGES}
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FlowSettings:
        """Settings from the environment; defaults for what is unset; SettingsError for a bad value."""
        defaults = cls()
        serving = environ.get("FLOW_SERVING", "").strip().lower() or defaults.serving
        if serving not in SERVING_MODES:
            raise SettingsError(
                f"FLOW_SERVING must be {' or '.join(SERVING_MODES)}, not {environ['FLOW_SERVING']!r}; "
                f"fix it or unset it (default {defaults.serving})"
            )
        return cls(
            serving=serving,
            poll_seconds=_positive(environ, "FLOW_POLL_SECONDS", defaults.poll_seconds, float),
            run_limit=_positive(environ, "FLOW_RUN_LIMIT", DEFAULT_RUN_LIMITS[serving], int),
            unannounced_grace_seconds=_positive(
                environ, "FLOW_UNANNOUNCED_GRACE_SECONDS", defaults.unannounced_grace_seconds, float
            ),
            deadlines={
                parameter: _positive(environ, deadline_setting(parameter), seconds, float)
                for parameter, seconds in defaults.deadlines.items()
            },
        )

    def warnings(self) -> list[str]:
        """What in these settings is likely to hurt, for serve.py to say at start."""
        if self.serving != "process" or self.run_limit <= SQLITE_SAFE_RUN_LIMIT:
            return []
        return [
            f"FLOW_RUN_LIMIT={self.run_limit}: a Prefect server on SQLite stops answering at about 30 "
            f"waiting runs served as processes (each holds websockets while it waits); serve them as "
            f"coroutines (unset FLOW_SERVING), run Prefect on PostgreSQL, or keep FLOW_RUN_LIMIT at "
            f"{SQLITE_SAFE_RUN_LIMIT} or less."
        ]


def _positive(environ: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not (value > 0 and math.isfinite(value)):
        unit = "a whole number" if kind is int else "a number of seconds"
        raise SettingsError(
            f"{name} must be {unit} greater than 0, not {raw!r}; fix it or unset it (default {default:g})"
        )
    return value
