"""The flow deployed to a process work pool (`prefect_flows/deploy.py`) and the workers that run it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from configuration import REPO_ROOT
from devstack.services.flow_server import ServesTheFlow
from devstack.services.prefect_server import PrefectServer, prefect_cli
from devstack.supervision.processes import ManagedProcess, ServiceError


@dataclass
class WorkPool(ServesTheFlow):
    """A process work pool on `prefect`, the flow deployed to it, and `workers` workers taking its runs.

    Args:
        worker_limit: flow runs each worker runs at once (`prefect worker start --limit`); with
            `workers` workers, that many times more files are followed at once. Each waiting run is
            a process of ~75 MiB.
        settings: the FLOW_* environment for deploy.py (the stage deadlines become deployment parameters).
    """

    prefect: PrefectServer
    log_dir: Path
    name: str = "files"
    workers: int = 2
    worker_limit: int = 50
    settings: dict[str, str] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)

    def start(self, timeout: float = 120.0) -> WorkPool:
        api = self.prefect.api_url
        created = httpx.post(f"{api}/work_pools/", json={"name": self.name, "type": "process"}, timeout=30)
        if created.status_code != 409:  # 409: it exists from an earlier start
            created.raise_for_status()
        env = {**os.environ, **self.prefect.client_env(), **self.settings}
        deploy = [sys.executable, "prefect_flows/deploy.py", "--pool", self.name]
        deployed = subprocess.run(
            deploy, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        if deployed.returncode != 0:
            error = deployed.stderr.strip()
            raise ServiceError(f"deploying the flow to work pool {self.name!r} failed:\n{error}")
        # Poll every second (default 10): a kickoff's run should start within seconds.
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
        for number in range(1, self.workers + 1):
            worker = f"{self.name}-worker-{number}"
            argv = [prefect_cli(), "worker", "start", "--pool", self.name, "--type", "process"]
            argv += ["--name", worker, "--limit", str(self.worker_limit)]
            process = ManagedProcess(worker, argv, self.log_dir / f"{worker}.log", env=env, cwd=REPO_ROOT)
            self.processes.append(process.start())
            process.wait_healthy(partial(self._online, worker), timeout)
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes.clear()

    def _online(self, worker: str) -> bool:
        try:
            response = httpx.post(
                f"{self.prefect.api_url}/work_pools/{self.name}/workers/filter", json={}, timeout=10
            )
        except httpx.HTTPError:
            return False
        return response.is_success and any(
            found["name"] == worker and found.get("status") == "ONLINE" for found in response.json()
        )
