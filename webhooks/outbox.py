"""The gateway's durable queue of events on their way to Prefect: SQLite in WAL mode.

Requests are answered only once their events are committed. Concurrent requests share one
commit (group commit): while one transaction is being written, the next requests' events
gather and go into the following one. One thread owns the connection, so the forwarder's reads
and deletes never contend with the writer for SQLite's lock.

Only true redeliveries are dropped: an event id already queued or forwarded. Event ids follow
from an idempotency key and the content it came with, so a key seen again with other content
is noticed: a distinct event (a reused Event Grid id), or refused (a reused `Idempotency-Key`).
The queue is bound to the Prefect API it was filled for, and bounded in bytes.
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

from webhooks.errors import KeyReused, OutboxError, OutboxFull, QueueBoundElsewhere

# A redelivery this long after its event was forwarded is still recognised and dropped:
# Event Grid retries for up to 24 hours; Prefect's own duplicate checks forget after minutes.
REDELIVERY_WINDOW_SECONDS = 25 * 3600
# Events Prefect refused are kept for a look this long, and at most this many.
REJECTED_KEPT_SECONDS, REJECTED_KEPT = 7 * 24 * 3600, 1000
DEFAULT_MAX_QUEUED_BYTES = 1024**3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queued (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, event BLOB NOT NULL,
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (id TEXT PRIMARY KEY, delivered_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_time ON delivered (delivered_at);
CREATE TABLE IF NOT EXISTS rejected (
    id TEXT NOT NULL, event BLOB NOT NULL, error TEXT NOT NULL, rejected_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bound (api_url TEXT NOT NULL);
"""
# Added since the first release; a queue from then gains it on opening.
_KEY_COLUMNS = """
ALTER TABLE queued ADD COLUMN key TEXT;
ALTER TABLE delivered ADD COLUMN key TEXT;
"""
_KEY_INDEXES = """
CREATE INDEX IF NOT EXISTS queued_by_key ON queued (key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS delivered_by_key ON delivered (key) WHERE key IS NOT NULL;
"""
# Neither queued right now nor forwarded within the redelivery window.
_ENQUEUE = """
INSERT OR IGNORE INTO queued (id, key, event, queued_at)
SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE id = ?1)
"""
# A new event id under a known key: the key came before with other content.
_KEY_REUSED = """
SELECT NOT EXISTS (SELECT 1 FROM queued WHERE id = ?2) AND NOT EXISTS (SELECT 1 FROM delivered WHERE id = ?2)
   AND (EXISTS (SELECT 1 FROM queued WHERE key = ?1) OR EXISTS (SELECT 1 FROM delivered WHERE key = ?1))
"""

T = TypeVar("T")


@dataclass(frozen=True)
class QueuedEvent:
    """One event waiting for Prefect, as stored: its JSON text ready to send."""

    seq: int
    id: str
    event: bytes


@dataclass(frozen=True)
class OutboxStats:
    queued: int
    queued_bytes: int
    oldest_queued_seconds: float | None
    rejected: int


@dataclass
class _Put:
    """One request's events on their way into a commit, and what became of them."""

    rows: list[tuple[str, str | None, bytes, float]]
    strict: bool
    future: asyncio.Future[list[str]]


class Outbox:
    """Events accepted by the gateway and not yet stored by Prefect."""

    def __init__(self, path: Path, max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        self.path = Path(path)
        self.max_queued_bytes = max_queued_bytes
        self.committed = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._queued_bytes = 0  # kept by the outbox's thread
        self._pending: list[_Put] = []
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> OutboxStats:
        await self._run(self._open)
        return await self.stats()

    async def put(
        self, events: list[dict[str, Any]], keys: dict[str, str] | None = None, strict: bool = False
    ) -> list[str]:
        """Return once `events` are committed to disk; an id already queued or delivered is skipped.

        `keys` maps event ids to the idempotency keys they came from. Returns the ids queued
        although their key made another event before (content changed under one key). With
        `strict`, such a request raises KeyReused instead and nothing of it is queued.
        OutboxFull when the queue has no room for the events.
        """
        if not events:
            return []
        now, keys = time.time(), keys or {}
        rows = [(event["id"], keys.get(event["id"]), orjson.dumps(event), now) for event in events]
        put = _Put(rows, strict, asyncio.get_running_loop().create_future())
        self._pending.append(put)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
        return await put.future

    async def next_batch(self, limit: int, after: int = 0, max_bytes: int | None = None) -> list[QueuedEvent]:
        """The oldest events queued after sequence number `after`: at most `limit`, and `max_bytes`
        together (one event even when it alone is larger)."""

        def read() -> list[tuple[int, str, bytes]]:
            sizes = self._database.execute(
                "SELECT seq, length(event) FROM queued WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
            last, total = None, 0
            for seq, size in sizes:
                total += size
                if last is not None and max_bytes is not None and total > max_bytes:
                    break
                last = seq
            if last is None:
                return []
            query = "SELECT seq, id, event FROM queued WHERE seq > ? AND seq <= ? ORDER BY seq"
            return self._database.execute(query, (after, last)).fetchall()

        return [QueuedEvent(*row) for row in await self._run(read)]

    async def delivered(self, batch: list[QueuedEvent]) -> None:
        """Prefect has these: drop them from the queue, remember their ids (and keys) against redelivery."""
        now = time.time()

        def write() -> None:
            with self._transaction() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO delivered (id, key, delivered_at) "
                    "SELECT ?1, (SELECT key FROM queued WHERE id = ?1), ?2",
                    [(item.id, now) for item in batch],
                )
                removed = self._remove(db, batch)
            self._queued_bytes -= removed

        await self._run(write)

    async def reject(self, item: QueuedEvent, error: str) -> None:
        """Prefect refuses this event as it is: keep it, with the reason, out of the queue."""

        def write() -> None:
            with self._transaction() as db:
                removed = self._remove(db, [item])
                db.execute(
                    "INSERT INTO rejected VALUES (?, ?, ?, ?)", (item.id, item.event, error, time.time())
                )
            self._queued_bytes -= removed

        await self._run(write)

    async def forget_old(self) -> None:
        """Forget deliveries past the redelivery window, and refused events past their keeping."""
        now = time.time()

        def write() -> None:
            with self._transaction() as db:
                db.execute("DELETE FROM delivered WHERE delivered_at < ?", (now - REDELIVERY_WINDOW_SECONDS,))
                db.execute(
                    "DELETE FROM rejected WHERE rejected_at < ? OR rowid NOT IN "
                    "(SELECT rowid FROM rejected ORDER BY rejected_at DESC LIMIT ?)",
                    (now - REJECTED_KEPT_SECONDS, REJECTED_KEPT),
                )

        await self._run(write)

    async def stats(self) -> OutboxStats:
        def read() -> OutboxStats:
            queued, oldest = self._database.execute("SELECT count(*), min(queued_at) FROM queued").fetchone()
            (rejected,) = self._database.execute("SELECT count(*) FROM rejected").fetchone()
            age = None if oldest is None else max(0.0, time.time() - oldest)
            return OutboxStats(queued, self._queued_bytes, age, rejected)

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
            try:
                outcomes = await self._run(self._enqueue, waiting)
                self.committed.set()
            except sqlite3.Error as error:
                outcomes = [OutboxError(f"cannot write the gateway's queue {self.path}: {error}")] * len(
                    waiting
                )
            for put, outcome in zip(waiting, outcomes, strict=True):
                if put.future.done():  # the request was cancelled; its events are stored all the same
                    continue
                if isinstance(outcome, Exception):
                    put.future.set_exception(outcome)
                else:
                    put.future.set_result(outcome)

    def _open(self) -> None:
        self._db = _connect(self.path)
        (self._queued_bytes,) = self._database.execute(
            "SELECT coalesce(sum(length(event)), 0) FROM queued"
        ).fetchone()

    def _enqueue(self, waiting: list[_Put]) -> list[list[str] | Exception]:
        """Queue each request's events in one transaction; what became of each request."""
        outcomes: list[list[str] | Exception] = []
        added = 0
        with self._transaction() as db:
            for put in waiting:
                reused = [
                    event_id
                    for event_id, key, _, _ in put.rows
                    if key and db.execute(_KEY_REUSED, (key, event_id)).fetchone()[0]
                ]
                size = sum(len(event) for _, _, event, _ in put.rows)
                if reused and put.strict:
                    outcomes.append(KeyReused("its idempotency key came before with a different body"))
                elif self._queued_bytes + added + size > self.max_queued_bytes:
                    outcomes.append(
                        OutboxFull(
                            f"the queue holds {self._queued_bytes + added} bytes, "
                            f"its limit is {self.max_queued_bytes}"
                        )
                    )
                else:
                    added += sum(len(row[2]) for row in put.rows if db.execute(_ENQUEUE, row).rowcount)
                    outcomes.append(reused)
        self._queued_bytes += added
        return outcomes

    @staticmethod
    def _remove(db: sqlite3.Connection, items: list[QueuedEvent]) -> int:
        """Delete `items` from the queue; the bytes that freed."""
        return sum(
            len(item.event)
            for item in items
            if db.execute("DELETE FROM queued WHERE seq = ?", (item.seq,)).rowcount
        )

    @property
    def _database(self) -> sqlite3.Connection:
        """The open connection; an OutboxError before open() or after close()."""
        if self._db is None:
            raise OutboxError(f"the gateway's queue {self.path} is not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._database.execute("BEGIN IMMEDIATE")
        try:
            yield self._database
        except BaseException:
            self._database.execute("ROLLBACK")
            raise
        self._database.execute("COMMIT")

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _connect(path: Path) -> sqlite3.Connection:
    """The queue's database, created or brought up to date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    # FULL: a commit is on disk before the request that waited for it is answered.
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(_SCHEMA)
    if "key" not in {column[1] for column in db.execute("PRAGMA table_info(queued)")}:
        db.executescript(_KEY_COLUMNS)
    db.executescript(_KEY_INDEXES)
    return db


def bind_queue(path: Path, api_url: str, rebind: bool = False) -> str | None:
    """Bind the queue at `path` to the Prefect API at `api_url`; the API it was bound to before, if another.

    QueueBoundElsewhere if it still holds events for another API and `rebind` is not set: they
    were accepted for that server, and would otherwise reach this one.
    """
    db = _connect(path)
    try:
        row = db.execute("SELECT api_url FROM bound").fetchone()
        previous = row[0] if row else None
        if previous == api_url:
            return None
        (queued,) = db.execute("SELECT count(*) FROM queued").fetchone()
        if previous is not None and queued and not rebind:
            raise QueueBoundElsewhere(
                f"the queue {path} holds {queued} events accepted for the Prefect API {previous}, "
                f"not {api_url}: start the gateway with PREFECT_API_URL={previous} to deliver them there, "
                f"or pass --rebind-queue to send them to {api_url}, or use another --data-dir"
            )
        db.execute("DELETE FROM bound")
        db.execute("INSERT INTO bound VALUES (?)", (api_url,))
        return previous
    finally:
        db.close()
