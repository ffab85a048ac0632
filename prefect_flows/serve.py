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

from prefect import get_client

from configuration import REPO_ROOT
from prefect_flows.deployment import FlowSettings, SettingsError, api_url
from prefect_flows.serving import CoroutineServing, serve_processes


def main() -> None:
    # Prefect's runner finds the flow of the runs it starts as a process from its working folder.
    os.chdir(REPO_ROOT)
    try:
        url = api_url()
        settings = FlowSettings.from_env()
    except SettingsError as error:
        sys.exit(f"serve.py: {error}")
    for warning in settings.warnings():
        print(f"serve.py: warning: {warning}", file=sys.stderr, flush=True)
    with get_client(sync_client=True) as client:
        if unhealthy := client.api_healthcheck():
            sys.exit(f"serve.py: cannot reach the Prefect API at {url} ({unhealthy}); is the server running?")
    if settings.serving == "process":
        serve_processes(settings)
    else:
        # Not sys.exit: the runs' coroutines are left as they are, Running, for the next serve.py.
        os._exit(CoroutineServing(settings).run())


if __name__ == "__main__":
    main()
