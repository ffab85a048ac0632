"""The local stack's services: a Prefect server, Azurite and the webhook gateway, each a child process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from devstack.prefect_api import read_events
from devstack.processes import ManagedProcess, ServiceError, ensure_port_free, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent

# Azurite's well-known development account (the same key `UseDevelopmentStorage=true` uses).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def http_ok(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _port_answers(host: str, port: int) -> bool:
    try:
        httpx.get(f"http://{host}:{port}/", timeout=2)
    except httpx.HTTPError:
        return False
    return True


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


@dataclass
class Gateway:
    """The webhook gateway (`python -m webhooks serve`), its queue in `data_dir`, forwarding to `api_url`."""

    data_dir: Path
    log_dir: Path
    api_url: str
    port: int = 0
    host: str = "127.0.0.1"
    config: Path | None = None
    options: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def hook_url(self, slug: str) -> str:
        return f"{self.url}/hooks/{slug}"

    def health(self) -> dict:
        response = httpx.get(f"{self.url}/health", timeout=10)
        response.raise_for_status()
        return response.json()

    def start(self, timeout: float = 30.0) -> Gateway:
        if self.port:
            ensure_port_free(self.port, "the webhook gateway", self.host)
        else:
            self.port = free_port(self.host)
        argv = [sys.executable, "-m", "webhooks", "serve", "--host", self.host, "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir), *self.options]
        if self.config:
            argv += ["--config", str(self.config)]
        self.process = ManagedProcess(
            "webhook-gateway",
            argv,
            self.log_dir / f"gateway-{self.port}.log",
            env={**os.environ, "PREFECT_API_URL": self.api_url, **self.extra_env},
            cwd=REPO_ROOT,
        ).start()
        self.process.wait_healthy(lambda: http_ok(f"{self.url}/health"), timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop; SIGTERM lets it flush what it can first, SIGKILL is a crash."""
        if self.process:
            self.process.stop(sig=sig)


def azurite_connection_string(host: str, blob_port: int, queue_port: int) -> str:
    """A full connection string for Azurite on non-default ports."""
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{AZURITE_ACCOUNT};"
    )


def azurite_executable() -> str:
    """Azurite from the project's node_modules (installed by `make`), else from PATH."""
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise ServiceError("Azurite is not installed: run `make install` (it runs `npm ci`).")


@dataclass
class Azurite:
    """Azurite's blob and queue services, their data under `data_dir`."""

    data_dir: Path
    log_dir: Path
    blob_port: int = 0
    queue_port: int = 0
    host: str = "127.0.0.1"
    process: ManagedProcess | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.host, self.blob_port, self.queue_port)

    def start(self, timeout: float = 30.0) -> Azurite:
        for attribute, what in (
            ("blob_port", "Azurite's blob service"),
            ("queue_port", "Azurite's queue service"),
        ):
            port = getattr(self, attribute)
            if port:
                ensure_port_free(port, what, self.host)
            else:
                setattr(self, attribute, free_port(self.host))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "azurite",
            [
                azurite_executable(),
                "--silent",
                "--skipApiVersionCheck",
                "--location",
                str(self.data_dir),
                "--blobHost",
                self.host,
                "--blobPort",
                str(self.blob_port),
                "--queueHost",
                self.host,
                "--queuePort",
                str(self.queue_port),
                "--tableHost",
                self.host,
                "--tablePort",
                str(free_port(self.host)),
            ],
            self.log_dir / f"azurite-{self.blob_port}.log",
        ).start()
        self.process.wait_healthy(
            lambda: _port_answers(self.host, self.blob_port) and _port_answers(self.host, self.queue_port),
            timeout,
        )
        return self

    def stop(self) -> None:
        """Let Azurite save its data, then end it: once it has served requests, its process
        lingers for minutes after its services report they closed."""
        process = self.process
        if not (process and process.running()):
            return
        log_start = process.log_path.stat().st_size
        os.killpg(process.pid, signal.SIGINT)

        def closed() -> bool:
            with open(process.log_path, "rb") as log:
                log.seek(log_start)
                return log.read().count(b"successfully closed") >= 3 or not process.running()

        # It gets killed below all the same; only unsaved metadata is at stake.
        with contextlib.suppress(ServiceError):
            wait_until(closed, 10, "Azurite to close its services")
        process.stop(timeout=5, sig=signal.SIGKILL)
