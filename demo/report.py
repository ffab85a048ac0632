"""What the demo prints once the scenarios are done, and what it tells the user to try next."""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from demo.scenarios import Observation
from devstack.prefect_queries.flow_runs import FINAL_STATES, runs_by_tracking_id
from simulators.config import DEFAULT_ENV_FILE, LOCAL_STORAGE
from simulators.ledger import RULE


def outcome_table(observations: list[Observation]) -> Table:
    """Scenario, trackingId, expected, observed (from the Prefect API), records, seconds."""
    table = Table(title="Scenarios, as the Prefect API shows them", title_justify="left")
    for column in ("scenario", "trackingId", "expected"):
        table.add_column(column, no_wrap=True)
    table.add_column("observed state and message", ratio=1)  # the one column that may wrap
    table.add_column("sent / received", no_wrap=True, justify="right")
    table.add_column("seconds", no_wrap=True, justify="right")
    for observation in observations:
        colour = "green" if observation.as_expected else "red"
        seen = observation.seen
        counts = f"{seen.get('Summary', '-')} / {seen.get('Reconciliation', '-')}"
        seconds = f"{observation.seconds:.1f}" if observation.seconds is not None else "-"
        observed = f"[{colour}]{observation.state.capitalize()}[/]: {observation.message}"
        table.add_row(
            observation.scenario.name,
            observation.tracking_id,
            observation.scenario.expected,
            observed,
            counts,
            seconds,
        )
    return table


def print_report(console: Console, observations: list[Observation], ui_url: str) -> None:
    """The table, the verdict and each run's address in the Prefect UI."""
    console.print()
    console.print(outcome_table(observations))
    for observation in observations:
        if observation.run:
            console.print(
                f"  {observation.scenario.name:<9} {ui_url}/runs/flow-run/{observation.run['id']}",
                highlight=False,
            )
    differing = [o.scenario.name for o in observations if not o.as_expected]
    if differing:
        console.print(f"[red]Not as expected: {', '.join(differing)}.[/] The services' logs say why.")
    else:
        console.print("[green]Every scenario ended as expected.[/]")


def print_next_steps(
    console: Console, ui_url: str, env_file: str, connection_string: str, log_dir: str
) -> None:
    """How to send a file of one's own through the running stack, and how to stop it."""
    options = ""
    if env_file != str(DEFAULT_ENV_FILE):
        options += f" --env-file {shlex.quote(env_file)}"
    if connection_string != LOCAL_STORAGE:
        options += f" --connection-string {shlex.quote(connection_string)}"
    mainframe = f".venv/bin/python -m simulators.mainframe{options}"
    console.print(
        f"\nThe pipeline keeps running. Prefect UI: {ui_url}   Logs: {log_dir}\n"
        "Send a file of your own from another terminal, in this folder; "
        "its run shows here as it runs and ends:\n"
        f"  {mainframe} run --records 100 --malformed 2\n"
        f"  {mainframe} run --file path/to/file.csv\n"
        f"The consumer stand-in accepts records that look like {RULE};\n"
        "it rejects others, and the run fails.\n"
        "[bold]Press Ctrl-C to stop every service.[/]",
        highlight=False,
    )


class RunFeed:
    """Prints each flow run the deployment starts after `since` when it runs and when it ends.

    So a file of one's own, sent once the scenarios are done, shows its outcome in the demo's terminal.
    """

    def __init__(
        self, console: Console, api_url: str, ui_url: str, deployment_id: str, since: datetime
    ) -> None:
        self.console, self.api_url, self.ui_url = console, api_url, ui_url
        self.deployment_id, self.since = deployment_id, since
        self.shown: dict[str, str] = {}  # run id -> the state type last printed

    def poll(self) -> None:
        try:
            runs = runs_by_tracking_id(self.api_url, self.deployment_id, self.since)
        except httpx.HTTPError:
            return  # Prefect is restarting or gone: the demo's process check says so
        for run in sorted(runs.values(), key=lambda run: run["expected_start_time"]):
            state = run["state_type"]
            if state in ("RUNNING", *FINAL_STATES) and self.shown.get(run["id"]) != state:
                self.shown[run["id"]] = state
                # Escaped: the run's name ends in `[<trackingId>]`, which rich would read as markup.
                self.console.print(f"  [bold]{escape(run['name'])}[/] {self._describe(run)}", highlight=False)

    def _describe(self, run: dict[str, Any]) -> str:
        state = run["state_type"]
        if state not in FINAL_STATES:
            return f"flow run {state.capitalize()}"
        colour = "green" if state == "COMPLETED" else "red"
        message = escape((run["state"] or {}).get("message") or "")
        return f"[{colour}]{state.capitalize()}[/]: {message}  {self.ui_url}/runs/flow-run/{run['id']}"
