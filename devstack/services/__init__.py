"""The local stack's services, each a child process: Prefect, Azurite, the gateway, PostgreSQL and Redis."""

from configuration import REPO_ROOT
from devstack.services.azurite import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    Azurite,
    azurite_connection_string,
    azurite_executable,
)
from devstack.services.datastores import Postgres, Redis
from devstack.services.gateway import Gateway
from devstack.services.prefect_server import PrefectServer, prefect_cli
from devstack.supervision.processes import http_ok

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "REPO_ROOT",
    "Azurite",
    "Gateway",
    "Postgres",
    "PrefectServer",
    "Redis",
    "azurite_connection_string",
    "azurite_executable",
    "http_ok",
    "prefect_cli",
]
