"""A bounded, thread-safe and fork-safe pool of evaluator instances.

A caller checks an instance out for its own use and puts it back; at most ``size``
instances exist at once, made on demand, and a caller that finds them all busy waits,
but never past its deadline. An instance that failed is discarded instead of returned,
so the next caller gets a fresh one. After ``fork()`` the child starts with an empty pool
and new locks: it never waits on a lock held by a thread that does not exist in it, and
never shares an instance with its parent.

Example:
    ```python
    import time

    from langchain_opa_guard.instance_pool import InstancePool

    pool = InstancePool(lambda: object(), size=2)
    item = pool.checkout(deadline=time.monotonic() + 1.0)
    pool.checkin(item)
    ```
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["InstancePool", "PoolClosedError", "PoolTimeoutError"]

T = TypeVar("T")


class PoolTimeoutError(TimeoutError):
    """Every instance stayed busy until the caller's deadline."""


class PoolClosedError(RuntimeError):
    """The pool was closed."""


_POOLS: weakref.WeakSet[InstancePool[object]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class InstancePool(Generic[T]):
    """At most ``size`` instances made by ``factory``, lent to one caller at a time.

    ``generation`` tells instances of an older policy apart: :meth:`replace` swaps the
    factory and bumps it, idle old instances are dropped at once, busy ones when they come
    back.
    """

    def __init__(self, factory: Callable[[], T], *, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._factory = factory
        self._generation = 0
        self._closed = False
        self._reset_after_fork()
        _POOLS.add(self)  # type: ignore[arg-type]

    def _reset_after_fork(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[tuple[int, T]] = []
        self._count = 0  # instances of this process: idle + lent out
        self._pid = os.getpid()

    @property
    def created(self) -> int:
        """How many instances exist now (idle and lent out)."""
        return self._count

    def checkout(self, *, deadline: float) -> tuple[int, T]:
        """Borrow an instance: an idle one, a new one while under ``size``, else wait.

        Returns ``(generation, instance)``; give both back to :meth:`checkin` or
        :meth:`discard`.

        Raises:
            PoolTimeoutError: None became free before ``deadline`` (``time.monotonic()``).
            PoolClosedError: The pool is closed.
            Exception: Whatever the factory raised (the slot is released).
        """
        if self._pid != os.getpid():  # a fork the at-fork hook did not see
            self._reset_after_fork()
        with self._cond:
            while True:
                if self._closed:
                    raise PoolClosedError("the policy engine is closed")
                if self._idle:
                    return self._idle.pop()
                if self._count < self.size:
                    self._count += 1
                    generation, factory = self._generation, self._factory
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolTimeoutError("every policy instance stayed busy")
                self._cond.wait(remaining)
        try:
            return generation, factory()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def checkin(self, generation: int, instance: T) -> None:
        """Give an instance back (dropped if the policy was replaced meanwhile)."""
        if self._pid != os.getpid():
            return
        with self._cond:
            if generation == self._generation and not self._closed:
                self._idle.append((generation, instance))
            else:
                self._count -= 1
            self._cond.notify()

    def discard(self, generation: int, instance: T) -> None:
        """Drop a borrowed instance that must not be used again (it trapped)."""
        if self._pid != os.getpid():
            return
        with self._cond:
            self._count -= 1
            self._cond.notify()

    def replace(self, factory: Callable[[], T], first: T | None = None) -> None:
        """Make later checkouts use ``factory`` (a reloaded policy); ``first`` is an
        instance of it already made."""
        with self._cond:
            self._generation += 1
            self._count -= len(self._idle)
            self._idle = []
            self._factory = factory
            if first is not None and self._count < self.size:
                self._count += 1
                self._idle.append((self._generation, first))
            self._cond.notify_all()

    def close(self) -> None:
        """Drop every idle instance; later checkouts raise :class:`PoolClosedError`."""
        with self._cond:
            self._closed = True
            self._count -= len(self._idle)
            self._idle = []
            self._cond.notify_all()
