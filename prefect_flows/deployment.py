"""How the reconciliation flow is deployed: its name, the Kickoff trigger and the settings.

Settings are environment variables, read once here (see the README's flow section):
FLOW_POLL_SECONDS, FLOW_RUN_LIMIT and one FLOW_<STAGE>_DEADLINE_SECONDS per stage.
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


@dataclass(frozen=True)
class FlowSettings:
    """How `serve.py` runs the flow: runner poll interval, concurrency, per-stage deadlines."""

    # The runner polls every 10 s by default; a kickoff should start a run within ~2 s.
    poll_seconds: float = 0.5
    # Each waiting run is a process of ~76 MiB and holds websockets: 20 fit a laptop and SQLite.
    run_limit: int = 20
    deadlines: dict[str, float] = field(
        default_factory=lambda: {stage.deadline_parameter: stage.default_deadline_seconds for stage in STAGES}
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FlowSettings:
        """Settings from the environment; defaults for what is unset; SettingsError for a bad value."""
        defaults = cls()
        return cls(
            poll_seconds=_positive(environ, "FLOW_POLL_SECONDS", defaults.poll_seconds, float),
            run_limit=_positive(environ, "FLOW_RUN_LIMIT", defaults.run_limit, int),
            deadlines={
                parameter: _positive(environ, deadline_setting(parameter), seconds, float)
                for parameter, seconds in defaults.deadlines.items()
            },
        )

    def warnings(self) -> list[str]:
        """What in these settings is likely to hurt, for serve.py to say at start."""
        if self.run_limit <= SQLITE_SAFE_RUN_LIMIT:
            return []
        return [
            f"FLOW_RUN_LIMIT={self.run_limit}: a Prefect server on SQLite stops answering at about 30 "
            f"waiting runs (each holds websockets while it waits); run Prefect on PostgreSQL or keep "
            f"FLOW_RUN_LIMIT at {SQLITE_SAFE_RUN_LIMIT} or less."
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
