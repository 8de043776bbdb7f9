"""The instance pool under contention: waiters are served in arrival order, closing wakes
them at once, and a waiter that gives up leaks nothing."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from langchain_opa_guard.engines.instance_pool import (
    InstancePool,
    PoolClosedError,
    PoolTimeoutError,
)


def _pool(size: int) -> InstancePool[int]:
    counter = itertools.count()
    return InstancePool(lambda: next(counter), size=size)


def _wait_for_waiters(pool: InstancePool[int], count: int) -> None:
    limit = time.monotonic() + 5
    while len(pool._waiters) < count:
        assert time.monotonic() < limit, "the waiter never queued"
        time.sleep(0.001)


def test_an_instance_given_back_goes_to_the_longest_waiter() -> None:
    pool = _pool(1)
    held = pool.checkout(deadline=time.monotonic() + 1)
    got: list[tuple[int, int]] = []
    waiter = threading.Thread(
        target=lambda: got.append(pool.checkout(deadline=time.monotonic() + 5))
    )
    waiter.start()
    _wait_for_waiters(pool, 1)
    pool.checkin(*held)
    # The caller that gave it back cannot take it again ahead of the one waiting.
    with pytest.raises(PoolTimeoutError):
        pool.checkout(deadline=time.monotonic() + 0.05)
    waiter.join(5)
    assert got == [held]
    pool.checkin(*got[0])
    assert pool.checkout(deadline=time.monotonic() + 1) == held


def test_no_waiter_starves_while_others_come_back_at_once() -> None:
    pool = _pool(1)
    stop = threading.Event()
    served = [0, 0, 0]

    def worker(index: int) -> None:
        while not stop.is_set():
            item = pool.checkout(deadline=time.monotonic() + 5)
            served[index] += 1
            time.sleep(0.0005)
            pool.checkin(*item)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(10)
    assert min(served) > 0.2 * max(served), served  # in turn, not one thread hogging it


def test_closing_wakes_waiters_at_once() -> None:
    pool = _pool(1)
    pool.checkout(deadline=time.monotonic() + 1)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.checkout(deadline=time.monotonic() + 30)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    waiters = [threading.Thread(target=wait) for _ in range(2)]
    for t in waiters:
        t.start()
    _wait_for_waiters(pool, 2)
    started = time.monotonic()
    pool.close()
    for t in waiters:
        t.join(5)
    assert time.monotonic() - started < 2
    assert len(errors) == 2 and all(isinstance(e, PoolClosedError) for e in errors)


def test_a_waiter_that_times_out_leaks_nothing() -> None:
    pool = _pool(1)
    held = pool.checkout(deadline=time.monotonic() + 1)
    with pytest.raises(PoolTimeoutError):
        pool.checkout(deadline=time.monotonic() + 0.05)
    assert not pool._waiters
    pool.checkin(*held)
    assert pool.checkout(deadline=time.monotonic() + 1) == held
    assert pool.created == 1


def test_a_discarded_instance_lets_the_next_waiter_make_a_fresh_one() -> None:
    pool = _pool(1)
    held = pool.checkout(deadline=time.monotonic() + 1)
    got: list[tuple[int, int]] = []
    waiter = threading.Thread(
        target=lambda: got.append(pool.checkout(deadline=time.monotonic() + 5))
    )
    waiter.start()
    _wait_for_waiters(pool, 1)
    pool.discard(*held)
    waiter.join(5)
    assert got and got[0][1] != held[1]  # a new instance
    assert pool.created == 1
