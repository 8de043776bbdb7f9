"""A bounded, thread-safe and fork-safe pool of evaluator instances.

A caller checks an instance out for its own use and puts it back; at most ``size``
instances exist at once, made on demand, and a caller that finds them all busy waits,
but never past its deadline. Waiting callers are served in arrival order: an instance
given back goes straight to the caller that has waited longest, so a busy caller that
comes back at once cannot take it first (without this, a waiter could starve until its
deadline while others decide over and over). An instance that failed is discarded
instead of returned, so the next caller gets a fresh one. After ``fork()`` the child
starts with an empty pool and new locks: it never waits on a lock held by a thread that
does not exist in it, and never shares an instance with its parent.

Example:
    ```python
    import time

    from langchain_opa_guard.engines.instance_pool import InstancePool

    pool = InstancePool(lambda: object(), size=2)
    item = pool.checkout(deadline=time.monotonic() + 1.0)
    pool.checkin(item)
    ```
"""

from __future__ import annotations

import collections
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
    back. ``dispose``, when given, is called with every instance the pool drops (to end a
    process, say), outside the pool's lock.
    """

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        size: int,
        dispose: Callable[[T], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._factory = factory
        self._dispose = dispose
        self._generation = 0
        self._closed = False
        self._reset_after_fork()
        _POOLS.add(self)  # type: ignore[arg-type]

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[int, T]] = []
        self._waiters: collections.deque[_Waiter[T]] = collections.deque()
        self._count = 0  # instances of this process: idle + lent out (+ being made)
        self._pid = os.getpid()

    @property
    def created(self) -> int:
        """How many instances exist now (idle and lent out)."""
        return self._count

    def checkout(self, *, deadline: float) -> tuple[int, T]:
        """Borrow an instance: an idle one, a new one while under ``size``, else wait in
        line for one.

        Returns ``(generation, instance)``; give both back to :meth:`checkin` or
        :meth:`discard`.

        Raises:
            PoolTimeoutError: None became free before ``deadline`` (``time.monotonic()``).
            PoolClosedError: The pool is closed (also while waiting).
            Exception: Whatever the factory raised (the slot is released).
        """
        if self._pid != os.getpid():  # a fork the at-fork hook did not see
            self._reset_after_fork()
        with self._lock:
            if self._closed:
                raise PoolClosedError("the policy engine is closed")
            waiter: _Waiter[T] | None = None
            if not self._waiters and self._idle:
                return self._idle.pop()
            if not self._waiters and self._count < self.size:
                self._count += 1
            else:
                waiter = _Waiter(self._lock)
                self._waiters.append(waiter)
                try:
                    while waiter.item is None and not waiter.make:
                        if self._closed:
                            raise PoolClosedError("the policy engine is closed")
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise PoolTimeoutError("every policy instance stayed busy")
                        waiter.cond.wait(remaining)
                finally:
                    if waiter.item is None and not waiter.make:
                        self._waiters.remove(waiter)
                if waiter.item is not None:
                    return waiter.item
            generation, factory = self._generation, self._factory
        try:
            return generation, factory()
        except BaseException:
            with self._lock:
                self._count -= 1
                self._hand_over()
            raise

    def checkin(self, generation: int, instance: T) -> None:
        """Give an instance back (dropped if the policy was replaced meanwhile)."""
        if self._pid != os.getpid():
            return
        with self._lock:
            kept = generation == self._generation and not self._closed
            if kept:
                self._idle.append((generation, instance))
            else:
                self._count -= 1
            self._hand_over()
        if not kept:
            self._drop([instance])

    def discard(self, generation: int, instance: T) -> None:
        """Drop a borrowed instance that must not be used again (it trapped)."""
        if self._pid != os.getpid():
            return
        with self._lock:
            self._count -= 1
            self._hand_over()
        self._drop([instance])

    def replace(self, factory: Callable[[], T], first: T | None = None) -> None:
        """Make later checkouts use ``factory`` (a reloaded policy); ``first`` is an
        instance of it already made."""
        with self._lock:
            self._generation += 1
            self._count -= len(self._idle)
            dropped, self._idle = self._idle, []
            self._factory = factory
            if first is not None and self._count < self.size:
                self._count += 1
                self._idle.append((self._generation, first))
            elif first is not None:
                dropped.append((self._generation, first))
            self._hand_over()
        self._drop([instance for _, instance in dropped])

    def _hand_over(self) -> None:
        """Serve the waiters in order: idle instances first, then free slots (the waiter
        makes the instance itself). Called with the lock held."""
        while self._waiters and not self._closed:
            waiter = self._waiters[0]
            if self._idle:
                waiter.item = self._idle.pop()
            elif self._count < self.size:
                self._count += 1
                waiter.make = True
            else:
                return
            self._waiters.popleft()
            waiter.cond.notify()

    def close(self) -> None:
        """Drop every idle instance; later checkouts, and callers waiting now, raise
        :class:`PoolClosedError`."""
        with self._lock:
            self._closed = True
            self._count -= len(self._idle)
            dropped, self._idle = self._idle, []
            for waiter in self._waiters:
                waiter.cond.notify()
        self._drop([instance for _, instance in dropped])

    def _drop(self, instances: list[T]) -> None:
        if self._dispose is not None:
            for instance in instances:
                self._dispose(instance)


class _Waiter(Generic[T]):
    """A caller waiting in line: handed an instance, or leave to make one."""

    __slots__ = ("cond", "item", "make")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.item: tuple[int, T] | None = None
        self.make = False
