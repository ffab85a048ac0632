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

import httpx
from prefect import Flow, get_client

from configuration import REPO_ROOT
from prefect_flows.deployment import (
    DEPLOYMENT_NAME,
    ENTRYPOINT,
    FlowSettings,
    SettingsError,
    api_url,
    kickoff_trigger,
)
from prefect_flows.recovery import HEARTBEAT_SECONDS, install_recovery


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
    try:
        asyncio.run(deploy(args, settings))
    except httpx.ConnectError as error:
        sys.exit(f"deploy.py: cannot reach the Prefect API at {url} ({error}); is the server running?")
    except ValueError as error:
        sys.exit(f"deploy.py: {error} For a local pool: prefect work-pool create {args.pool} --type process")


async def deploy(args: argparse.Namespace, settings: FlowSettings) -> None:
    flow = await Flow.afrom_source(source=args.source, entrypoint=ENTRYPOINT)
    deployment_id = await flow.adeploy(
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
    async with get_client() as client:
        await install_recovery(client, deployment_id, heartbeats=True)
    print(
        f"Deployed '{flow.name}/{DEPLOYMENT_NAME}' ({deployment_id}) to work pool {args.pool!r}, with the "
        "automations that resume the runs of a stopped worker",
        flush=True,
    )


if __name__ == "__main__":
    main()
