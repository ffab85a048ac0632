"""Sending envelopes to the records queue with a bounded number in flight."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient


class RecordsQueue:
    """One queue, `concurrency` sends at a time; the first failed send stops the rest and is raised."""

    def __init__(self, queue: QueueClient, concurrency: int) -> None:
        self.queue = queue
        self.concurrency = concurrency

    def ensure_exists(self) -> None:
        """Create the queue when missing (deployments create it; a laptop's Azurite may not have it)."""
        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()

    def send(self, body: bytes) -> None:
        self.queue.send_message(body)

    def send_all(self, bodies: Iterable[bytes]) -> int:
        """Send every message body; return how many. Bodies are produced only as fast as they are sent."""
        slots = threading.BoundedSemaphore(self.concurrency)
        failures: list[BaseException] = []
        sent = 0

        def done(future: Future) -> None:
            slots.release()
            if (error := future.exception()) is not None:
                failures.append(error)

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="records-queue") as pool:
            for body in bodies:
                slots.acquire()
                if failures:
                    slots.release()
                    break
                pool.submit(self.send, body).add_done_callback(done)
                sent += 1
        if failures:
            raise failures[0]
        return sent
