"""One gateway per queue: an exclusive lock on a file in the data folder, released when the process dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from webhooks.errors import QueueInUse

LOCK_FILE = "gateway.lock"


def lock_queue(data_dir: Path, host: str, port: int) -> IO[str]:
    """Hold the queue in `data_dir` for this process; keep the returned file open while serving.

    The operating system releases the lock when the process ends, however it ends, so a
    crashed gateway never blocks the next one. The file tells a second gateway who holds it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open while the gateway serves
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise QueueInUse(
            f"another gateway ({holder}) serves the queue in {data_dir}: one queue takes one gateway. "
            f"Stop that one, or give this one its own --data-dir"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}, http://{host}:{port}\n")
    lock.flush()
    return lock
