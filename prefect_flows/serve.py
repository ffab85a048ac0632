"""Serve the reconciliation flow: one run per mainframe kickoff, until you press Ctrl+C.

Run from the repository root with the Prefect API set, e.g.:

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python prefect_flows/serve.py

Each run is a coroutine of this process (FLOW_SERVING=coroutine, the default): one process
follows thousands of files. FLOW_SERVING=process runs each in a process of its own, as Prefect's
runner does. Other settings (environment): FLOW_POLL_SECONDS (default 0.5), FLOW_RUN_LIMIT (5000
coroutines, 20 processes), FLOW_UNANNOUNCED_GRACE_SECONDS (600) and the stage deadlines
FLOW_TRANSFER_DEADLINE_SECONDS, FLOW_BLOB_CREATED_DEADLINE_SECONDS,
FLOW_SUMMARY_DEADLINE_SECONDS, FLOW_RECONCILIATION_DEADLINE_SECONDS.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# `python prefect_flows/serve.py` puts prefect_flows/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from prefect_flows.deployment import (  # noqa: E402
    DEPLOYMENT_NAME,
    FlowSettings,
    SettingsError,
    api_url,
    kickoff_trigger,
)
from prefect_flows.flow import reconcile_file  # noqa: E402
from prefect_flows.serving import CoroutineServing, serve_processes  # noqa: E402


def main() -> None:
    # Flow runs started as processes import `prefect_flows` from the runner's directory.
    os.chdir(REPO_ROOT)
    try:
        url = api_url()
        settings = FlowSettings.from_env()
    except SettingsError as error:
        sys.exit(f"serve.py: {error}")
    for warning in settings.warnings():
        print(f"serve.py: warning: {warning}", file=sys.stderr, flush=True)
    deployment = reconcile_file.to_deployment(
        name=DEPLOYMENT_NAME,
        triggers=[kickoff_trigger()],
        parameters=settings.deadlines,
    )
    # Registering the deployment un-pauses it, so a restart resumes a deployment an earlier
    # runner paused. Not pausing on shutdown keeps it that way: the deployment has no schedule
    # to pause, and kickoffs that arrive while nothing serves it wait as Scheduled runs.
    try:
        if settings.serving == "process":
            print(
                f"Serving '{reconcile_file.name}/{DEPLOYMENT_NAME}' to {url} as processes: polling every "
                f"{settings.poll_seconds:g} s, at most {settings.run_limit} runs at once, "
                f"deadlines (s) {settings.deadlines}",
                flush=True,
            )
            serve_processes(deployment, settings)
        else:
            # The runs' coroutines are left as they are, Running, for the next serve.py.
            os._exit(CoroutineServing(deployment, settings).run())
    except httpx.ConnectError as error:
        sys.exit(f"serve.py: cannot reach the Prefect API at {url} ({error}); is the server running?")


if __name__ == "__main__":
    main()
