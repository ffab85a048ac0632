"""How the reconciliation flow is deployed: its name, the Kickoff trigger and the settings.

Settings are environment variables, declared once here (SETTINGS) and documented in
docs/serving.md from that declaration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from prefect.events import DeploymentEventTrigger
from prefect.settings import PREFECT_API_URL

from configuration.declared import Environment, Setting, SettingsError, choice, number
from prefect_flows.stages import STAGES

__all__ = ["SETTINGS", "FlowSettings", "SettingsError", "api_url", "kickoff_trigger"]

FLOW_NAME = "reconcile-file"
DEPLOYMENT_NAME = "Event Driven Flow"
# A Prefect server on SQLite serves at most 100 requests at once, and every open websocket holds
# one: a waiting run holds two or three (its event stream, Prefect's event sender). Measured
# here: the server stopped answering at about 33 waiting runs.
SQLITE_SAFE_RUN_LIMIT = 25
ENTRYPOINT = "prefect_flows/flow.py:reconcile_file"


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


def _run_limit(environment: Environment, name: str) -> int | None:
    """None when unset: the serving mode's default."""
    return number(1, whole=True)(environment, name) if environment.text(name) else None


SETTINGS = (
    Setting(
        "FLOW_SERVING",
        "coroutine",
        "`coroutine`: every run a coroutine of the one serve.py process, thousands at once; `process`: "
        "a process per run, as Prefect's runner serves",
        read=choice(*SERVING_MODES),
    ),
    Setting(
        "FLOW_POLL_SECONDS",
        "0.5",
        "how often serve.py looks for new runs (Prefect's default is 10 s)",
        read=number(0.1),
    ),
    Setting(
        "FLOW_RUN_LIMIT",
        "",
        f"files followed at once; more kickoffs wait as Scheduled runs (unset: "
        f"{DEFAULT_RUN_LIMITS['coroutine']} coroutines, {DEFAULT_RUN_LIMITS['process']} processes)",
        read=_run_limit,
    ),
    Setting(
        "FLOW_UNANNOUNCED_GRACE_SECONDS",
        "600",
        "a `Microsoft.Storage.BlobCreated` or `Summary` whose file had no kickoff this long after it is "
        "reported (coroutine serving)",
        read=number(1),
    ),
    *(
        Setting(
            deadline_setting(stage.deadline_parameter),
            f"{stage.default_deadline_seconds:g}",
            f"`{stage.event}` must be seen within this long after the kickoff",
            read=number(1),
        )
        for stage in STAGES
    ),
)


@dataclass(frozen=True)
class FlowSettings:
    """How `serve.py` runs the flow: serving mode, poll interval, concurrency, deadlines, grace."""

    serving: str
    poll_seconds: float
    run_limit: int
    unannounced_grace_seconds: float
    deadlines: dict[str, float]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FlowSettings:
        """Settings from the environment; defaults for what is unset; SettingsError for a bad value."""
        values = Environment(SETTINGS, environ).values()
        return cls(
            serving=values["flow_serving"],
            poll_seconds=values["flow_poll_seconds"],
            run_limit=values["flow_run_limit"] or DEFAULT_RUN_LIMITS[values["flow_serving"]],
            unannounced_grace_seconds=values["flow_unannounced_grace_seconds"],
            deadlines={
                stage.deadline_parameter: values[deadline_setting(stage.deadline_parameter).lower()]
                for stage in STAGES
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
