"""PostgreSQL and Redis from Debian's packages: child processes on loopback, data in a directory of ours."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from devstack.supervision.processes import ManagedProcess, ServiceError, ensure_port_free, free_port

INSTALL_HINT = "run `make scale-services` (it runs `apt-get install postgresql redis-server`)"
# PostgreSQL refuses to run as root; Debian's package creates this user for it.
SERVICE_USER = "postgres"


def postgres_bin_dir() -> Path:
    """Where PostgreSQL's programs are: Debian keeps them off PATH, in /usr/lib/postgresql/<version>/bin."""
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(re.sub(r"\D", "", path.parent.parent.name) or 0),
    )
    if installed:
        return installed[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise ServiceError(f"PostgreSQL is not installed: {INSTALL_HINT}")


def as_service_user(argv: list[str]) -> list[str]:
    """`argv` run as SERVICE_USER when we are root (PostgreSQL will not run as root), else as is."""
    if os.geteuid() != 0:
        return argv
    _service_account()
    # setpriv execs in place (runuser would stay as a parent), so our signals reach postgres itself.
    return ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups", "--", *argv]


def _service_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ServiceError(
            f"PostgreSQL refuses to run as root and there is no user {SERVICE_USER!r} to run it as: "
            f"{INSTALL_HINT}, or run as an ordinary user"
        ) from None


@dataclass
class Postgres:
    """A PostgreSQL cluster under `data_dir`, listening on loopback TCP only, with a `prefect` database."""

    data_dir: Path
    log_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    user: str = "prefect"
    database: str = "prefect"
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The connection URL for Prefect (asyncpg). Trust authentication: only loopback can connect."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{self.database}"

    def start(self, timeout: float = 60.0) -> Postgres:
        if self.port:
            ensure_port_free(self.port, "PostgreSQL", self.host)
        else:
            self.port = free_port(self.host)
        bin_dir = postgres_bin_dir()
        cluster = self.data_dir / "cluster"
        if not (cluster / "PG_VERSION").exists():
            self._init(bin_dir, cluster)
        argv = [str(bin_dir / "postgres"), "-D", str(cluster), "-p", str(self.port)]
        # TCP on loopback only. No socket file: none in /var/run/postgresql (not ours), none too long a path.
        # Connections for two Prefect processes with pools of up to 50 each, and a margin.
        for setting in (f"listen_addresses={self.host}", "unix_socket_directories=", "max_connections=200"):
            argv += ["-c", setting]
        self.process = ManagedProcess(
            "postgres", as_service_user(argv), self.log_dir / "postgres.log"
        ).start()
        self.process.wait_healthy(
            lambda: self.run_client("pg_isready", "-d", "postgres").returncode == 0, timeout
        )
        created = self.run_client("createdb", self.database)
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise ServiceError(f"could not create database {self.database!r}: {created.stderr.strip()}")
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT): SIGTERM would wait for every client to disconnect first."""
        if self.process:
            self.process.stop(timeout=20, sig=signal.SIGINT)

    def _init(self, bin_dir: Path, cluster: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._hand_to_service_user()
        initdb = [str(bin_dir / "initdb"), "-D", str(cluster), "-U", self.user, "--auth=trust"]
        initdb += ["--encoding=UTF8", "--locale=C.UTF-8"]
        result = subprocess.run(as_service_user(initdb), capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"initdb failed for {cluster}:\n{result.stdout}{result.stderr}")

    def _hand_to_service_user(self) -> None:
        """Give the data directory to SERVICE_USER, who must also be able to reach it."""
        account = _service_account()
        os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        if subprocess.run(as_service_user(["test", "-w", str(self.data_dir)])).returncode != 0:
            raise ServiceError(
                f"PostgreSQL runs as user {SERVICE_USER!r} (it refuses root), who cannot reach "
                f"{self.data_dir}: give PostgreSQL a directory whose parents others may enter, "
                f"e.g. under /tmp (scale stack: --postgres-dir)"
            )

    def run_client(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of PostgreSQL's client programs (`psql`, `createdb`...) against this server."""
        address = ["-h", self.host, "-p", str(self.port), "-U", self.user]
        argv = [str(postgres_bin_dir() / program), *address, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)


@dataclass
class Redis:
    """A Redis server on loopback, in memory only (no snapshots): the local stack's Redis starts empty."""

    data_dir: Path
    log_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    process: ManagedProcess | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=db, socket_timeout=5, decode_responses=True)

    def start(self, timeout: float = 30.0) -> Redis:
        if self.port:
            ensure_port_free(self.port, "Redis", self.host)
        else:
            self.port = free_port(self.host)
        executable = shutil.which("redis-server")
        if not executable:
            raise ServiceError(f"Redis is not installed: {INSTALL_HINT}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "redis",
            [
                executable,
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            self.log_dir / "redis.log",
        ).start()
        self.process.wait_healthy(self._answers, timeout)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False
