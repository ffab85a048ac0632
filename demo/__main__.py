"""The whole pipeline on this machine: `python -m demo` (`make demo`), or `--once` (`make demo-once`).

Starts a Prefect server, Azurite, the webhook gateway, the served flow, the Function App and the
consumer stand-in as child processes (logs and data under .local/demo/), plays three scenarios
through them (succeed, mismatch, overdue), prints what the Prefect API shows of each, then keeps
the pipeline running for files of your own until Ctrl-C, which stops every child process.
`--once` stops after the table instead, exiting 1 when any outcome is not the expected one.

    .venv/bin/python -m demo
    .venv/bin/python -m demo --once --prefect-port 4201 --deadline 45
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from rich.console import Console

from configuration import REPO_ROOT
from demo.report import RunFeed, print_next_steps, print_report
from demo.scenarios import NEVER_ANSWER, SCENARIOS, ScenarioPlayer
from demo.stack import DemoStack, Ports, StackOptions, shown
from devstack.supervision.processes import ServiceError
from file_relay.delivery import DeliveryError
from simulators.config import DEFAULT_ENV_FILE, LOCAL_STORAGE
from simulators.mainframe import Mainframe, MainframeError

DEFAULT_DEADLINE_SECONDS = 30.0
# How long past the deadline a run may take to end before the demo gives up on it.
GRACE_SECONDS = 90.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Ports()
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="stop after the scenarios; exit 1 if any differs")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO_ROOT / ".local" / "demo",
        help="logs and data (default: .local/demo)",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=DEFAULT_ENV_FILE,
        help="webhook URLs for the senders (default: webhooks.env)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE_SECONDS,
        help="seconds after its kickoff by which each stage of a file must be seen (default: %(default)g)",
    )
    for name, default in vars(defaults).items():
        parser.add_argument(f"--{name}-port", type=int, default=default, help=f"(default: {default})")
    args = parser.parse_args(argv)
    if args.deadline <= 0:
        parser.error("--deadline must be greater than 0")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    if not console.is_terminal:  # logs and CI: a wide table, not one folded at 80 columns
        console = Console(soft_wrap=True, width=160)
    ports = Ports(**{name: getattr(args, f"{name}_port") for name in vars(Ports())})
    options = StackOptions(
        args.data_dir.resolve(), args.env_file.resolve(), ports, args.deadline, NEVER_ANSWER
    )
    stack = DemoStack(options, console)
    # Closing the terminal or `kill` stops the children too, as Ctrl-C does.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    console.print(
        f"[bold]The mainframe file pipeline, observed by Prefect[/]  (logs: {shown(stack.log_dir)})"
    )
    try:
        stack.start()
        settings = stack.app_settings()
        mainframe = Mainframe.configured(options.env_file, environ=settings)
        player = ScenarioPlayer(stack.prefect.api_url, stack.deployment_id(), mainframe, console)
        console.print(
            f"\nPlaying {len(SCENARIOS)} scenarios (deadline {args.deadline:g} s after each kickoff):"
        )
        observations = player.play(SCENARIOS, args.deadline + GRACE_SECONDS)
        print_report(console, observations, stack.prefect.ui_url)
        prefect = stack.prefect
        feed = RunFeed(console, prefect.api_url, prefect.ui_url, stack.deployment_id(), datetime.now(UTC))
        as_expected = all(observation.as_expected for observation in observations)
        if args.once:
            return 0 if as_expected else 1
        default_storage = (ports.blob, ports.queue) == (Ports().blob, Ports().queue)
        connection = LOCAL_STORAGE if default_storage else stack.azurite.connection_string
        print_next_steps(
            console, stack.prefect.ui_url, str(options.env_file), connection, shown(stack.log_dir)
        )
        _stay_up(stack, console, feed)
    except KeyboardInterrupt:
        console.print("\nInterrupted.")
        return 130
    except (ServiceError, MainframeError, DeliveryError) as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        return 1
    finally:
        # A second Ctrl-C must not leave children behind.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        stack.stop()
        console.print("Every service is stopped.")
    return 0 if as_expected else 1


def _stay_up(stack: DemoStack, console: Console, feed: RunFeed) -> None:
    """Until Ctrl-C: print how the user's own files go, and say so when a service ends by itself."""
    reported: set[str] = set()
    try:
        while True:
            for name, process in stack.processes.items():
                if process and not process.running() and name not in reported:
                    reported.add(name)
                    code, log = process.returncode, shown(process.log_path)
                    console.print(f"[red]The {name} stopped[/] (exit code {code}); see {log}")
            feed.poll()
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("\nCtrl-C: stopping every service…")


if __name__ == "__main__":
    sys.exit(main())
