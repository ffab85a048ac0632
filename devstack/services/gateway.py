"""The webhook gateway (`python -m webhooks serve`) as a child process."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from configuration import REPO_ROOT
from devstack.supervision.processes import ManagedProcess, ensure_port_free, free_port, http_ok


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
