"""The gateway's durable queue of events on their way to Prefect: SQLite in WAL mode.

Requests are answered only once their events are committed. Concurrent requests share one
commit (group commit): while one transaction is being written, the next requests' events
gather and go into the following one. One thread owns the connection, so the forwarder's reads
and deletes never contend with the writer for SQLite's lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

# A redelivery this long after its event was forwarded is still recognised and dropped:
# Event Grid retries for up to 24 hours; Prefect's own duplicate checks forget after minutes.
REDELIVERY_WINDOW_SECONDS = 25 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queued (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, event BLOB NOT NULL, queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (id TEXT PRIMARY KEY, delivered_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_time ON delivered (delivered_at);
CREATE TABLE IF NOT EXISTS rejected (id TEXT NOT NULL, event BLOB NOT NULL, error TEXT NOT NULL, rejected_at REAL NOT NULL);
"""
# Neither queued right now nor forwarded within the redelivery window.
_ENQUEUE = """
INSERT OR IGNORE INTO queued (id, event, queued_at)
SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE id = ?1)
"""

T = TypeVar("T")


class OutboxError(RuntimeError):
    """The outbox could not store events durably (disk full, file unwritable...)."""


@dataclass(frozen=True)
class QueuedEvent:
    """One event waiting for Prefect, as stored: its JSON text ready to send."""

    seq: int
    id: str
    event: bytes


@dataclass(frozen=True)
class OutboxStats:
    queued: int
    oldest_queued_seconds: float | None
    rejected: int


class Outbox:
    """Events accepted by the gateway and not yet stored by Prefect."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.committed = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[list[tuple[str, bytes, float]], asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> OutboxStats:
        await self._run(self._open)
        return await self.stats()

    async def put(self, events: list[dict[str, Any]]) -> None:
        """Return once `events` are committed to disk; an id already queued or delivered is skipped."""
        if not events:
            return
        now = time.time()
        rows = [(event["id"], orjson.dumps(event), now) for event in events]
        future = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
        await future

    async def next_batch(self, limit: int, after: int = 0) -> list[QueuedEvent]:
        """The oldest queued events queued after sequence number `after`, at most `limit`."""
        query = "SELECT seq, id, event FROM queued WHERE seq > ? ORDER BY seq LIMIT ?"
        rows = await self._run(lambda: self._db.execute(query, (after, limit)).fetchall())
        return [QueuedEvent(*row) for row in rows]

    async def delivered(self, batch: list[QueuedEvent]) -> None:
        """Prefect has these: drop them from the queue, remember their ids against redelivery."""
        now = time.time()

        def write() -> None:
            with self._transaction() as db:
                db.executemany("DELETE FROM queued WHERE seq = ?", [(item.seq,) for item in batch])
                db.executemany("INSERT OR REPLACE INTO delivered VALUES (?, ?)", [(item.id, now) for item in batch])

        await self._run(write)

    async def reject(self, item: QueuedEvent, error: str) -> None:
        """Prefect refuses this event as it is: keep it, with the reason, out of the queue."""

        def write() -> None:
            with self._transaction() as db:
                db.execute("DELETE FROM queued WHERE seq = ?", (item.seq,))
                db.execute("INSERT INTO rejected VALUES (?, ?, ?, ?)", (item.id, item.event, error, time.time()))

        await self._run(write)

    async def forget_old_deliveries(self) -> None:
        cutoff = time.time() - REDELIVERY_WINDOW_SECONDS
        await self._run(lambda: self._db.execute("DELETE FROM delivered WHERE delivered_at < ?", (cutoff,)))

    async def stats(self) -> OutboxStats:
        def read() -> OutboxStats:
            queued, oldest = self._db.execute("SELECT count(*), min(queued_at) FROM queued").fetchone()
            (rejected,) = self._db.execute("SELECT count(*) FROM rejected").fetchone()
            return OutboxStats(queued, None if oldest is None else max(0.0, time.time() - oldest), rejected)

        return await self._run(read)

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown()

    async def _commit_pending(self) -> None:
        while self._pending:
            waiting, self._pending = self._pending, []
            rows = [row for rows, _ in waiting for row in rows]
            failure = None
            try:
                await self._run(self._enqueue, rows)
                self.committed.set()
            except sqlite3.Error as error:
                failure = OutboxError(f"cannot write the gateway's queue {self.path}: {error}")
            for _, future in waiting:
                if future.done():  # the request was cancelled; its events are stored all the same
                    continue
                if failure is None:
                    future.set_result(None)
                else:
                    future.set_exception(failure)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before the request that waited for it is answered.
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)

    def _enqueue(self, rows: list[tuple[str, bytes, float]]) -> None:
        with self._transaction() as db:
            db.executemany(_ENQUEUE, rows)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
