"""The scale stack: Prefect on PostgreSQL with Redis messaging, flows on a work pool, the paced gateway.

    make stack-scale                                   # starts it; Ctrl-C stops everything it started
    .venv/bin/python -m devstack.scale_stack --help    # its settings

PostgreSQL and Redis come from Debian's packages (`make scale-services` installs them) and run
on loopback with their data under `--data-dir`. Prefect's API (without services) and its
background services run as separate processes, as Prefect documents for
self-hosting at scale. The flow is served by one `prefect_flows/serve.py`, each run a coroutine
(`--serving coroutine`, the default), or deployed with `prefect_flows/deploy.py` to a process
work pool served by `--workers` workers, each running up to `--worker-limit` flow runs at once
(`--serving process`). The webhook gateway forwards to the API at up to `--max-events-per-second`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from devstack.services import REPO_ROOT, Gateway, PrefectServer
from devstack.services.datastores import Postgres, Redis
from devstack.services.flow_server import FlowServer
from devstack.services.work_pool import WorkPool
from devstack.supervision.processes import ManagedProcess, ServiceError

DEFAULT_DATA_DIR = REPO_ROOT / ".local" / "scale"
# What the gateway sends this stack per second: Redis queues every event the API takes, so this only
# bounds how far the background services may fall behind (see the README's scaling section).
DEFAULT_MAX_EVENTS_PER_SECOND = 2000.0
# A Prefect on Redis answers each batch after Redis round trips: several batches on their way at once
# let the gateway reach its ceiling.
GATEWAY_IN_FLIGHT = 4


class Part(Protocol):
    def start(self, timeout: float = ...) -> Part: ...
    def stop(self) -> None: ...


P = TypeVar("P", bound=Part)


def redis_messaging(redis: Redis) -> dict[str, str]:
    """Prefect server settings that put its messaging, cache, ordering, leases and Docket on `redis`."""
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": redis.host,
        "PREFECT_REDIS_MESSAGING_PORT": str(redis.port),
        "PREFECT_REDIS_MESSAGING_DB": "0",
        # Docket schedules the services' periodic work; in memory it would not be shared by processes.
        "PREFECT_SERVER_DOCKET_URL": redis.url(1),
    }


@dataclass
class ScaleStack:
    """Every process of the scale stack, started in order and stopped in reverse.

    Args:
        postgres_dir: PostgreSQL's data (default `root/postgres`). When we are root, PostgreSQL
            runs as user `postgres`, who must be able to reach it.
        flow_settings: FLOW_* environment for the deployment and its runs (stage deadlines).
    """

    root: Path
    postgres_dir: Path | None = None
    prefect_port: int = 0
    gateway_port: int = 0
    postgres_port: int = 0
    redis_port: int = 0
    serving: str = "coroutine"
    workers: int = 2
    worker_limit: int = 50
    max_events_per_second: float = DEFAULT_MAX_EVENTS_PER_SECOND
    flow_settings: dict[str, str] = field(default_factory=dict)
    started: list[Part] = field(default_factory=list)

    def start(self, say: Callable[[str], None] = lambda message: None) -> ScaleStack:
        """Start every part, saying what is up; on any failure, stop what already started."""
        logs = self.root / "logs"
        try:
            self.postgres = self._up(
                Postgres(self.postgres_dir or self.root / "postgres", logs, self.postgres_port)
            )
            self.redis = self._up(Redis(self.root / "redis", logs, self.redis_port))
            say(f"PostgreSQL  {self.postgres.url}\n  Redis       {self.redis.url()}")
            settings = {
                **redis_messaging(self.redis),
                # Fewer, larger inserts (default 20): ~400 -> ~590 events/s stored on 2 cores.
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
                # 100 waiting runs exhausted the default 5 + 10 connections per process (API 500s,
                # runs crashed).
                "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
                "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "30",
            }
            prefect = PrefectServer(
                self.root / "prefect", logs, self.prefect_port, database_url=self.postgres.url,
                extra_env=settings, separate_services=True,
            )  # fmt: skip
            self.prefect = self._up(prefect, timeout=180)
            say(f"Prefect     {self.prefect.ui_url} (the API and the background services apart)")
            if self.serving == "process":
                self.flows: FlowServer | WorkPool = self._up(
                    WorkPool(self.prefect, logs, "files", self.workers, self.worker_limit, self.flow_settings)
                )
                say(f"Work pool   'files': {self.workers} process workers, {self.worker_limit} runs each")
            else:
                self.flows = self._up(FlowServer(self.prefect, logs, self.flow_settings), timeout=120)
                say("Flow        served by one serve.py, each run a coroutine")
            ceiling = ["--max-events-per-second", f"{self.max_events_per_second:g}"]
            options = [*ceiling, "--max-in-flight", str(GATEWAY_IN_FLIGHT)]
            gateway = Gateway(
                self.root / "gateway", logs, self.prefect.api_url, self.gateway_port, options=options
            )
            self.gateway = self._up(gateway)
            say(
                f"Gateway     {self.gateway.url}/hooks/<webhook>, "
                f"up to {self.max_events_per_second:g} events/s"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> list[ManagedProcess]:
        """Every long-running process of the started stack."""
        servers = [self.postgres.process, self.redis.process, self.prefect.process, self.prefect.services]
        flows = self.flows.processes if isinstance(self.flows, WorkPool) else [self.flows.process]
        return [*servers, *flows, self.gateway.process]

    def services_caught_up(self) -> bool:
        """Whether every consumer of Prefect's events (persister, triggers...) read all Redis holds."""
        with self.redis.client() as redis:
            last = redis.xinfo_stream("events")["last-generated-id"]
            return all(group["last-delivered-id"] == last for group in redis.xinfo_groups("events"))

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()

    def __enter__(self) -> ScaleStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _up(self, part: P, **start_options: float) -> P:
        self.started.append(part)
        part.start(**start_options)
        return part


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.scale_stack", description=__doc__.splitlines()[0]
    )
    option = parser.add_argument
    option("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="data and logs (default: %(default)s)")
    option("--postgres-dir", type=Path, help="PostgreSQL's data (default: DATA_DIR/postgres)")
    option("--prefect-port", type=int, default=4200, help="Prefect's API and UI (default: %(default)s)")
    option("--gateway-port", type=int, default=4280, help="the webhook gateway (default: %(default)s)")
    option("--postgres-port", type=int, default=0, help="PostgreSQL (default: a free port)")
    option("--redis-port", type=int, default=0, help="Redis (default: a free port)")
    option(
        "--serving", choices=["coroutine", "process"], default="coroutine",
        help="runs as coroutines of one serve.py, or processes of a work pool's workers "
        "(default: %(default)s)",
    )  # fmt: skip
    option(
        "--workers",
        type=_positive,
        default=2,
        help="process workers, with --serving process (default: %(default)s)",
    )
    option(
        "--worker-limit",
        type=_positive,
        default=50,
        help="flow runs per worker at once (default: %(default)s)",
    )
    option(
        "--max-events-per-second", type=float, default=DEFAULT_MAX_EVENTS_PER_SECOND,
        help="the gateway's ceiling towards Prefect (default: %(default)g)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    flow_settings = {name: value for name, value in os.environ.items() if name.startswith("FLOW_")}
    stack = ScaleStack(
        args.data_dir, args.postgres_dir, args.prefect_port, args.gateway_port, args.postgres_port,
        args.redis_port, args.serving, args.workers, args.worker_limit, args.max_events_per_second,
        flow_settings,
    )  # fmt: skip
    # SIGTERM stops the stack as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.monotonic()
    print(f"Starting the scale stack (logs in {args.data_dir / 'logs'})", flush=True)
    try:
        stack.start(lambda message: print(f"  {message}", flush=True))
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        print(
            f"Up in {time.monotonic() - started:.0f} s. Point senders at the gateway "
            f"(.venv/bin/python -m webhooks provision --local --port {stack.gateway.port}) and flows at "
            f"PREFECT_API_URL={stack.prefect.api_url}. Press Ctrl-C to stop.",
            flush=True,
        )
        while all(process.running() for process in stack.processes()):
            time.sleep(1)
        for process in stack.processes():
            if not process.running():
                tail = process.log_tail()
                print(
                    f"error: {process.name} exited; last lines of {process.log_path}:\n{tail}",
                    file=sys.stderr,
                )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("Stopping the scale stack", flush=True)
        stack.stop()


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number greater than 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
