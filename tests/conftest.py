"""Real services for the tests: a Prefect server, Azurite and the webhook gateway, each started once.

Tests that need a private one (one they restart, flood or configure differently) use the factories.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from devstack.scale_stack import ScaleStack
from devstack.services import Azurite, Gateway, PrefectServer
from prefect_flows.deployment import same_deadlines

# The Function App's fixtures (`receiver`, `start_relay`), defined beside its tests, for every test module.
pytest_plugins = ["tests.relay_fixtures"]

# A shell without job control (`make test &` in a script) starts us with Ctrl-C ignored, and every
# process we start would inherit that: the tests that press Ctrl-C need it as a terminal has it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Service(Protocol):
    def start(self): ...
    def stop(self) -> None: ...


P = TypeVar("P", bound=Service)  # a service: start() returns it, stop() stops it


# Fixtures that start a Prefect server, Azurite, a gateway or the scale stack as processes.
SERVICE_FIXTURES = frozenset(
    {"prefect_server", "start_prefect_server", "azurite", "start_azurite", "gateway", "start_gateway"}
    | {"scale_stack", "start_relay"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs live services, so `pytest -m "not services"` runs the others alone."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the services started by the tests write their logs."""
    return tmp_path_factory.mktemp("service-logs")


def _starter(make: Callable[..., P]) -> Iterator[Callable[..., P]]:
    """A factory fixture's body: start what `make` builds; stop every one started, at the end."""
    started: list[P] = []

    def start(*args, **options) -> P:
        part = make(*args, **options)
        started.append(part)
        return part.start()

    yield start
    for part in started:
        part.stop()


@pytest.fixture(scope="session")
def start_prefect_server(
    tmp_path_factory: pytest.TempPathFactory, service_logs: Path
) -> Iterator[Callable[..., PrefectServer]]:
    """Factory: a fresh Prefect server on SQLite; every server it started is stopped at the end."""
    yield from _starter(
        lambda **options: PrefectServer(tmp_path_factory.mktemp("prefect"), service_logs, **options)
    )


@pytest.fixture(scope="session")
def prefect_server(start_prefect_server: Callable[..., PrefectServer]) -> Iterator[PrefectServer]:
    """The session's shared Prefect server; the Prefect SDK in this process points at it."""
    server = start_prefect_server()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server


@pytest.fixture(scope="session")
def start_azurite(
    tmp_path_factory: pytest.TempPathFactory, service_logs: Path
) -> Iterator[Callable[[], Azurite]]:
    """Factory: a fresh Azurite with its own data; every one it started is stopped at the end."""
    yield from _starter(lambda: Azurite(tmp_path_factory.mktemp("azurite"), service_logs))


@pytest.fixture(scope="session")
def azurite(start_azurite: Callable[[], Azurite]) -> Azurite:
    """The session's shared Azurite (blob and queue services)."""
    return start_azurite()


@pytest.fixture(scope="session")
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory, service_logs: Path
) -> Iterator[Callable[..., Gateway]]:
    """Factory: a webhook gateway with a fresh queue; every one it started is stopped at the end."""
    yield from _starter(
        lambda api_url, **options: Gateway(
            tmp_path_factory.mktemp("gateway"), service_logs, api_url, **options
        )
    )


@pytest.fixture(scope="session")
def gateway(start_gateway: Callable[..., Gateway], prefect_server: PrefectServer) -> Gateway:
    """The session's shared gateway, serving the repo's webhooks config, forwarding to `prefect_server`."""
    return start_gateway(prefect_server.api_url)


# Every stage's deadline on the scale stack: the overdue scenario ends this long after its kickoff.
SCALE_DEADLINE_SECONDS = 30


@pytest.fixture(scope="session")
def scale_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleStack]:
    """The session's scale stack: PostgreSQL, Redis, Prefect's API and services apart, workers, gateway."""
    # PostgreSQL runs as its own user when we are root: its data cannot live under pytest's private tmp.
    postgres_dir = Path(tempfile.mkdtemp(prefix="scale-postgres-"))
    deadlines = same_deadlines(SCALE_DEADLINE_SECONDS)
    stack = ScaleStack(
        tmp_path_factory.mktemp("scale"), postgres_dir, worker_limit=20, flow_settings=deadlines
    )
    try:
        yield stack.start()
    finally:
        stack.stop()
        shutil.rmtree(postgres_dir, ignore_errors=True)
