"""Azurite's blob and queue services as a child process, from the project's node_modules."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx

from configuration import REPO_ROOT
from devstack.supervision.processes import (
    ManagedProcess,
    ServiceError,
    ensure_port_free,
    free_port,
    wait_until,
)

# Azurite's well-known development account (the same key `UseDevelopmentStorage=true` uses).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _port_answers(host: str, port: int) -> bool:
    try:
        httpx.get(f"http://{host}:{port}/", timeout=2)
    except httpx.HTTPError:
        return False
    return True


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
