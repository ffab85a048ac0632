"""Register the reconciliation flow in a work pool, for teams that run Prefect workers.

`serve.py` is the simple way (one process serves and runs). With workers instead:

    .venv/bin/prefect work-pool create files --type process      # once
    .venv/bin/python prefect_flows/deploy.py --pool files        # after every change
    .venv/bin/prefect worker start --pool files                  # where the runs should execute

The deployment gets the same name, Kickoff trigger and deadline settings (FLOW_*_DEADLINE_SECONDS)
as the served one, and the automations that resume the runs of a worker that stopped
(prefect_flows/recovery.py). By default its code is this checkout (a worker on this machine finds it);
pass --source with a git URL for workers elsewhere, and --image for Docker or Kubernetes pools.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from uuid import UUID

REPO_ROOT = Path(__file__).resolve().parent.parent
# `python prefect_flows/deploy.py` puts prefect_flows/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from prefect import Flow, get_client  # noqa: E402

from prefect_flows.deployment import (  # noqa: E402
    DEPLOYMENT_NAME,
    ENTRYPOINT,
    FlowSettings,
    SettingsError,
    api_url,
    kickoff_trigger,
)
from prefect_flows.recovery import HEARTBEAT_SECONDS, install_recovery  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True, help="work pool to deploy to (it must exist)")
    parser.add_argument(
        "--source", default=str(REPO_ROOT), help="where workers get the code: a directory or a git URL"
    )
    parser.add_argument("--image", help="an image that contains the code, for Docker or Kubernetes pools")
    args = parser.parse_args(argv)
    try:
        url = api_url()
        settings = FlowSettings.from_env()
    except SettingsError as error:
        sys.exit(f"deploy.py: {error}")
    flow = Flow.from_source(source=args.source, entrypoint=ENTRYPOINT)
    try:
        deployment_id = flow.deploy(
            name=DEPLOYMENT_NAME,
            work_pool_name=args.pool,
            image=args.image,
            build=False,
            push=False,
            triggers=[kickoff_trigger()],
            parameters=settings.deadlines,
            # Heartbeats let the server notice a run whose worker or machine stopped (recovery.py).
            job_variables={"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}},
        )
        asyncio.run(_install_recovery(deployment_id))
    except httpx.ConnectError as error:
        sys.exit(f"deploy.py: cannot reach the Prefect API at {url} ({error}); is the server running?")
    except ValueError as error:
        sys.exit(f"deploy.py: {error} For a local pool: prefect work-pool create {args.pool} --type process")
    print(
        f"Deployed '{flow.name}/{DEPLOYMENT_NAME}' ({deployment_id}) to work pool {args.pool!r}, with the "
        "automations that resume the runs of a stopped worker",
        flush=True,
    )


async def _install_recovery(deployment_id: UUID) -> None:
    async with get_client() as client:
        await install_recovery(client, deployment_id, heartbeats=True)


if __name__ == "__main__":
    main()
