"""What the demo prints once the scenarios are done, and what it tells the user to try next."""

from __future__ import annotations

import shlex

from rich.console import Console
from rich.table import Table

from demo.scenarios import Observation
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
        "Send a file of your own from another terminal, in this folder (a kickoff starts a run first):\n"
        f"  {mainframe} run --records 100 --malformed 2\n"
        f"  {mainframe} run --file path/to/file.csv\n"
        f"The consumer stand-in accepts records that look like {RULE};\n"
        "it rejects others, and the run fails.\n"
        "[bold]Press Ctrl-C to stop every service.[/]",
        highlight=False,
    )
