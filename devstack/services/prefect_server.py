"""A Prefect server as child processes: on SQLite by default, or PostgreSQL with the services apart."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from devstack.prefect_queries.events import read_events
from devstack.supervision.processes import ManagedProcess, ServiceError, ensure_port_free, free_port, http_ok


@dataclass
class PrefectServer:
    """A Prefect server with its home under `data_dir`: on SQLite there by default.

    Args:
        database_url: another database (e.g. PostgreSQL's `postgresql+asyncpg://...`).
        extra_env: more server settings, e.g. Redis messaging (see devstack.scale_stack).
        separate_services: migrate the database once, then run the API (`--no-services`) and the
            background services (`prefect server services start`) as separate processes: Prefect's
            layout for scale (not on SQLite).
    """

    data_dir: Path
    log_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    separate_services: bool = False
    process: ManagedProcess | None = None
    services: ManagedProcess | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment for a process that talks to this server (flows, gateway, tests)."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.data_dir / "client-home")}

    def server_env(self) -> dict[str, str]:
        """Environment for the server's own processes."""
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.data_dir),
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url
            or f"sqlite+aiosqlite:///{self.data_dir / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            # Events reach the database in batches; a short interval lets readers see them sooner.
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
            **self.extra_env,
        }
        env.pop("PREFECT_API_URL", None)
        if self.separate_services:
            # Migrated once before the processes start, not by each of them at once.
            env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"
        return env

    def start(self, timeout: float = 60.0) -> PrefectServer:
        if self.port:
            ensure_port_free(self.port, "the Prefect server", self.host)
        else:
            self.port = free_port(self.host)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self.server_env()
        argv = [prefect_cli(), "server", "start", "--host", self.host, "--port", str(self.port)]
        if self.separate_services:
            self._migrate(env, timeout)
            argv.append("--no-services")
        log = self.log_dir / f"prefect-server-{self.port}.log"
        self.process = ManagedProcess("prefect-server", argv, log, env=env).start()
        self.process.wait_healthy(lambda: http_ok(f"{self.api_url}/health"), timeout)
        if self.separate_services:
            self.services = ManagedProcess(
                "prefect-services",
                [prefect_cli(), "server", "services", "start"],
                self.log_dir / f"prefect-services-{self.port}.log",
                env=env,
            ).start()
            self.services.wait_healthy(self._probe_stored(), timeout)
        return self

    def restart(self, timeout: float = 60.0) -> PrefectServer:
        """Stop and start again on the same port and database."""
        self.stop()
        return self.start(timeout)

    def stop(self) -> None:
        for process in (self.services, self.process):
            if process:
                process.stop()

    def _migrate(self, env: dict[str, str], timeout: float) -> None:
        upgrade = [prefect_cli(), "server", "database", "upgrade", "-y"]
        result = subprocess.run(upgrade, env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            output = result.stdout[-2000:] + result.stderr[-2000:]
            raise ServiceError(f"migrating Prefect's database failed:\n{output}")

    def _probe_stored(self) -> Callable[[], bool]:
        """Post an event now; the check passes once it is stored (the services consume and persist events)."""
        resource_id = f"devstack.probe.{uuid.uuid4()}"
        probe = {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": "devstack.probe",
            "resource": {"prefect.resource.id": resource_id},
        }
        httpx.post(f"{self.api_url}/events", json=[probe], timeout=10).raise_for_status()
        return lambda: bool(read_events(self.api_url, ["devstack.probe"], {"id": [resource_id]}))


def prefect_cli() -> str:
    """The `prefect` command of this Python's environment (the venv's, whatever PATH says)."""
    return str(Path(sys.executable).with_name("prefect"))
