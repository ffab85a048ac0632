"""The reconciliation flow's runner, `python prefect_flows/serve.py`, as a child process."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from configuration import REPO_ROOT
from devstack.prefect_queries.flow_runs import delete_retrying, read_deployment, timestamp
from devstack.services.prefect_server import PrefectServer
from devstack.supervision.processes import ManagedProcess, ServiceError
from prefect_flows.deployment import DEPLOYMENT_NAME, FLOW_NAME


class ServesTheFlow:
    """A way of serving the flow to `prefect` (serve.py, a work pool): the deployment it registers."""

    prefect: PrefectServer

    def deployment(self) -> dict[str, Any] | None:
        return read_deployment(self.prefect.api_url, FLOW_NAME, DEPLOYMENT_NAME)

    def deployment_id(self) -> str:
        """The deployment's id; ServiceError if it is not (or no longer) registered."""
        if deployment := self.deployment():
            return str(deployment["id"])
        raise ServiceError(f"{FLOW_NAME}/{DEPLOYMENT_NAME} is not deployed to {self.prefect.api_url}")


@dataclass
class FlowServer(ServesTheFlow):
    """serve.py serving the deployment (and its Kickoff trigger) to one Prefect server.

    Args:
        settings: the FLOW_* environment (deadlines, poll interval, run limit).
    """

    prefect: PrefectServer
    log_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    name: str = "flow-server"
    cwd: Path = REPO_ROOT
    process: ManagedProcess | None = None

    def start(self, timeout: float = 90.0, wait: bool = True) -> FlowServer:
        """Start serve.py and (with `wait`) wait until it polls for the (re-registered) deployment."""
        started = datetime.now(UTC)
        self.process = ManagedProcess(
            self.name,
            # From the repository root: `python prefect_flows/serve.py`, as the README says.
            [sys.executable, os.path.relpath(REPO_ROOT / "prefect_flows" / "serve.py", self.cwd)],
            self.log_dir / f"{self.name}.log",
            env={**os.environ, **self.prefect.client_env(), **self.settings},
            cwd=self.cwd,
        ).start()
        if wait:
            self.process.wait_healthy(lambda: self._polled_since(started), timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop serve.py: SIGTERM as a deploy or systemd does; SIGKILL as a crash."""
        if self.process:
            self.process.stop(sig=sig)

    def remove_deployment(self) -> None:
        """Delete the deployment and its Kickoff trigger, so later kickoffs start nothing."""
        deployment = self.deployment()
        if deployment is None:
            return
        api = self.prefect.api_url
        # Deleting a deployment leaves its trigger behind (it would fail on every kickoff).
        delete_retrying(f"{api}/automations/owned-by/prefect.deployment.{deployment['id']}")
        delete_retrying(f"{api}/deployments/{deployment['id']}")

    def _polled_since(self, started: datetime) -> bool:
        try:
            deployment = self.deployment()
        except httpx.HTTPError:
            return False
        polled = deployment.get("last_polled") if deployment else None
        return isinstance(polled, str) and timestamp(polled) >= started
