"""The emitter's read-ahead stage: items in order, at most `depth` ahead, errors and early stops handled.

The emitter itself runs end to end against Azurite in tests/test_function_app.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from file_relay.emitter import read_ahead


class Producer:
    """Counts the items it has produced; can fail at one of them."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at, self.produced = count, fail_at, 0
        self.threads: set[str] = set()

    def items(self) -> Iterator[int]:
        for n in range(self.count):
            if n == self.fail_at:
                raise ConnectionError(f"item {n} could not be read")
            self.produced += 1
            self.threads.add(threading.current_thread().name)
            yield n


def test_read_ahead_yields_every_item_in_order_from_another_thread_at_most_depth_ahead():
    producer = Producer(50)
    ahead = []

    for n in read_ahead(producer.items(), depth=3):
        ahead.append(producer.produced - n - 1)

    assert len(ahead) == 50 and max(ahead) <= 3
    assert producer.threads and threading.current_thread().name not in producer.threads


def test_an_error_while_reading_ahead_reaches_the_consumer_after_the_items_before_it():
    received = []

    with pytest.raises(ConnectionError, match="item 7 could not be read"):
        for n in read_ahead(Producer(50, fail_at=7).items(), depth=2):
            received.append(n)

    assert received == list(range(7))


def test_a_consumer_that_stops_early_stops_the_reading_thread():
    producer = Producer(10_000)
    threads_before = threading.active_count()

    items = read_ahead(producer.items(), depth=2)
    assert [next(items), next(items)] == [0, 1]
    items.close()

    assert producer.produced <= 5
    assert threading.active_count() == threads_before
