"""The demo's stack: every part of the pipeline as a child process, logs and data in one project folder.

Prefect server (SQLite), Azurite, the webhook gateway, `prefect_flows/serve.py`, the Function App
(`func start` when Azure Functions Core Tools are installed, else the host stand-in
`python -m devstack.functions_host`) and the consumer stand-in. `webhooks.env` gets the gateway's
URLs, as `python -m webhooks provision --local` writes them, so every sender reads the same file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient
from rich.console import Console

from configuration import REPO_ROOT
from devstack.functions_host.local_settings import local_settings, read_env_file
from devstack.services import Azurite, Gateway, PrefectServer
from devstack.services.flow_server import FlowServer
from devstack.supervision.processes import ManagedProcess, ServiceError, ensure_port_free
from file_relay.settings import load_settings
from prefect_flows.deployment import same_deadlines
from webhooks.catalog import load_catalog
from webhooks.provisioning import gateway_urls, sender_settings, write_env_file

HOST = "127.0.0.1"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Ports:
    """Where the services listen: the ports their users expect by default."""

    prefect: int = 4200
    gateway: int = 4280
    blob: int = 10000
    queue: int = 10001
    functions: int = 7071  # `func start` only


@dataclass(frozen=True)
class StackOptions:
    """How the demo runs its stack.

    Args:
        deadline_seconds: every stage's deadline (FLOW_*_DEADLINE_SECONDS) for serve.py.
        never_answer: trackingIds (a glob) the consumer stand-in never answers for.
    """

    data_dir: Path
    env_file: Path
    ports: Ports
    deadline_seconds: float
    never_answer: str


class DemoStack:
    """Starts the services in order, reporting each, and stops every one it started."""

    def __init__(self, options: StackOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.log_dir = options.data_dir / "logs"
        ports = options.ports
        self.prefect = PrefectServer(
            options.data_dir / "prefect", self.log_dir, port=ports.prefect, host=HOST
        )
        self.azurite = Azurite(
            options.data_dir / "azurite",
            self.log_dir,
            blob_port=ports.blob,
            queue_port=ports.queue,
            host=HOST,
        )
        self.gateway = Gateway(
            options.data_dir / "gateway", self.log_dir, self.prefect.api_url, ports.gateway, HOST
        )
        deadlines = same_deadlines(options.deadline_seconds)
        self.flow_server = FlowServer(self.prefect, self.log_dir, settings=deadlines)
        self.func = shutil.which("func")
        self.function_app: ManagedProcess | None = None
        self.consumer: ManagedProcess | None = None
        self._stops: list[tuple[str, Callable[[], None]]] = []

    @property
    def processes(self) -> dict[str, ManagedProcess | None]:
        """Each service's process, by the name the demo shows."""
        return {
            "Prefect server": self.prefect.process,
            "Azurite": self.azurite.process,
            "webhook gateway": self.gateway.process,
            "flow server": self.flow_server.process,
            "Function App": self.function_app,
            "consumer stand-in": self.consumer,
        }

    def check(self) -> None:
        """Fail before starting anything when a port is taken or webhooks.env points elsewhere."""
        ports = self.options.ports
        wanted = [
            (ports.prefect, "the Prefect server (choose another with --prefect-port)"),
            (ports.gateway, "the webhook gateway (--gateway-port)"),
            (ports.blob, "Azurite's blob service (--blob-port)"),
            (ports.queue, "Azurite's queue service (--queue-port)"),
        ]
        if self.func:
            wanted.append((ports.functions, "func start (--functions-port)"))
        for port, what in wanted:
            ensure_port_free(port, what, HOST)
        self._check_env_file()

    def start(self) -> None:
        """Start every service, in dependency order, with a line per service."""
        self.check()
        self._start(
            "Prefect server", lambda: self.prefect.start(timeout=120), self.prefect.stop, self.prefect.ui_url
        )
        self._start(
            "Azurite",
            self.start_azurite,
            self.azurite.stop,
            f"blob :{self.azurite.blob_port}, queue :{self.azurite.queue_port}",
        )
        self._start(
            "webhook gateway",
            lambda: self.gateway.start(timeout=60),
            self.gateway.stop,
            f"{self.gateway.url}/hooks/<name>",
        )
        write_env_file(self.options.env_file, self.gateway_settings())
        self.console.print(
            f"  [green]✓[/] {'webhooks.env':<18} the gateway's URLs in {shown(self.options.env_file)}"
        )
        deadline = f"{self.options.deadline_seconds:g} s"
        self._start(
            "flow server",
            lambda: self.flow_server.start(timeout=120),
            self.flow_server.stop,
            f"serve.py, stage deadlines {deadline}",
        )
        if self.func:
            where = f"func start on :{self.options.ports.functions}"
        else:
            self.console.print(
                "  [yellow]![/] Azure Functions Core Tools (`func`) are not on PATH: the Function App runs "
                "in the host stand-in (python -m devstack.functions_host), which invokes the same registered "
                "functions."
            )
            where = "host stand-in, polling every 1 s"
        self._start("Function App", self.start_function_app, self._stop_function_app, where)
        self._start(
            "consumer stand-in",
            self.start_consumer,
            self._stop_consumer,
            f"never answers {self.options.never_answer}",
        )

    def stop(self) -> None:
        """Stop every service started, last first; one that will not stop does not keep the others up."""
        while self._stops:
            name, stop = self._stops.pop()
            with self.console.status(f"Stopping {name}…"):
                try:
                    stop()
                except (OSError, ServiceError) as error:
                    self.console.print(f"  [red]✗[/] could not stop {name}: {error}")

    def app_settings(self) -> dict[str, str]:
        """The Function App's settings: Azurite's storage, the gateway's webhooks, defaults for the rest."""
        overrides = {"AzureWebJobsStorage": self.azurite.connection_string, **self.gateway_settings()}
        return local_settings(overrides)["Values"]

    def deployment_id(self) -> str:
        deployment = self.flow_server.deployment()
        if deployment is None:
            process = self.flow_server.process
            raise ServiceError(
                f"serve.py registered no deployment: see {shown(process.log_path) if process else 'its log'}"
            )
        return deployment["id"]

    def _start(self, name: str, start: Callable[[], object], stop: Callable[[], None], where: str) -> None:
        started = time.monotonic()
        self._stops.append((name, stop))
        with self.console.status(f"Starting {name}…"):
            start()
        self.console.print(f"  [green]✓[/] {name:<18} {where}  [dim]({time.monotonic() - started:.1f} s)[/]")

    def start_azurite(self) -> None:
        """Azurite, with the incoming container the Function App watches."""
        self.azurite.start()
        container = ContainerClient.from_connection_string(
            self.azurite.connection_string, load_settings().incoming_container
        )
        with contextlib.suppress(ResourceExistsError):  # the deployment creates it in Azure
            container.create_container()

    def _stop_function_app(self) -> None:
        if self.function_app:
            self.function_app.stop()

    def _stop_consumer(self) -> None:
        if self.consumer:
            self.consumer.stop()

    def start_function_app(self) -> None:
        """`func start` when Core Tools are installed, else the host stand-in; both get the app settings."""
        if self.func:
            # As in an activated virtual environment: func starts the Python worker with the venv's python.
            venv = Path(sys.executable).parent
            path = f"{venv}{os.pathsep}{os.environ.get('PATH', '')}"
            env = {**self.app_settings(), "PATH": path, "VIRTUAL_ENV": str(venv.parent)}
            argv = [self.func, "start", "--port", str(self.options.ports.functions)]
            status = f"http://{HOST}:{self.options.ports.functions}/admin/host/status"
            self.function_app = self._child("function-app", argv, env)
            self.function_app.wait_healthy(lambda: _host_running(status), 180)
        else:
            argv = [sys.executable, "-m", "devstack.functions_host"]
            app = self.function_app = self._child("function-app", argv, self.app_settings())
            app.wait_healthy(lambda: "ready" in app.output(), 60)

    def start_consumer(self) -> None:
        """The consumer stand-in: reads the records queue, posts Reconciliation to the gateway."""
        argv = [sys.executable, "-m", "simulators.consumer", "--env-file", str(self.options.env_file)]
        argv += ["--never-answer", self.options.never_answer]
        # The Function App's settings: the same storage account and records queue.
        consumer = self.consumer = self._child("consumer", argv, self.app_settings())
        consumer.wait_healthy(lambda: "ready" in consumer.output(), 60)

    def _child(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        return ManagedProcess(
            name,
            argv,
            self.log_dir / f"{name}.log",
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            cwd=REPO_ROOT,
        ).start()

    def gateway_settings(self) -> dict[str, str]:
        """The senders' webhook URLs (`<PREFIX>_WEBHOOK_URL`), on the gateway at `ports.gateway`."""
        return sender_settings(gateway_urls(load_catalog(), HOST, self.options.ports.gateway), environ={})

    def _check_env_file(self) -> None:
        path = self.options.env_file
        if not path.exists():
            return
        current = read_env_file(path)
        elsewhere = {
            name: current[name]
            for name in self.gateway_settings()
            if current.get(name) and urlsplit(current[name]).hostname not in LOOPBACK
        }
        if elsewhere:
            name, url = next(iter(elsewhere.items()))
            raise ServiceError(
                f"{shown(path)} points the senders elsewhere ({name} is on {urlsplit(url).hostname}, "
                f"Prefect Cloud?) and the demo would replace it with the local gateway's URLs. Move it "
                f"aside, "
                f"or run the demo with another file: --env-file .local/demo/webhooks.env"
            )


def _host_running(status_url: str) -> bool:
    try:
        return httpx.get(status_url, timeout=2).json().get("state") == "Running"
    except (httpx.HTTPError, ValueError):
        return False


def shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it, as a user types it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
