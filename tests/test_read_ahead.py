"""read_ahead: the next item is made in a worker thread while the caller works on the one
before; the items come in order, at most one ahead, errors are raised where the item would
have been taken, and a caller stopping early leaves the source closed."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from connector.read_ahead import read_ahead


class Source:
    """Numbers 0..count-1, recording how many were made, by which threads, and whether the
    generator's ``finally`` ran."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.made = 0
        self.threads: set[str] = set()
        self.closed = False

    def items(self) -> Iterator[int]:
        try:
            for number in range(self.count):
                if number == self.fail_at:
                    raise ValueError(f"item {number} unreadable")
                self.threads.add(threading.current_thread().name)
                self.made += 1
                yield number
        finally:
            self.closed = True


def test_items_come_in_order_made_in_a_worker_thread() -> None:
    source = Source(50)
    assert list(read_ahead(source.items(), "numbers")) == list(range(50))
    assert source.closed
    assert all(name.startswith("numbers") for name in source.threads)
    assert threading.current_thread().name not in source.threads


def test_never_more_than_one_item_ahead() -> None:
    source = Source(20)
    for taken, number in enumerate(read_ahead(source.items()), start=1):
        assert number == taken - 1
        assert taken <= source.made <= taken + 1


def test_an_error_making_an_item_is_raised_where_it_would_be_taken() -> None:
    source = Source(10, fail_at=4)
    taken = []
    with pytest.raises(ValueError, match="item 4 unreadable"):
        for number in read_ahead(source.items()):
            taken.append(number)
    assert taken == [0, 1, 2, 3]
    assert source.closed


def test_a_caller_stopping_early_leaves_the_source_closed() -> None:
    source = Source(1000)
    with (
        pytest.raises(RuntimeError, match="the warehouse refused"),
        contextlib.closing(read_ahead(source.items())) as items,
    ):
        for number in items:
            if number == 2:
                assert not source.closed
                raise RuntimeError("the warehouse refused")
    assert source.closed
    assert source.made <= 4  # the items taken and the one being made when the caller stopped


def test_an_empty_source_gives_nothing() -> None:
    source = Source(0)
    assert list(read_ahead(source.items())) == []
    assert source.closed
