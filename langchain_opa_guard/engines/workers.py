"""Worker threads the guard owns: bounded, fork-safe, and carrying the caller's context.

Three things a bare ``ThreadPoolExecutor`` gets wrong for a library that runs inside
gunicorn, Celery or ``multiprocessing``:

* **Forks.** A forked child inherits the executor object but none of its threads, so work
  submitted in the child waits forever. :class:`Workers` drops its executor in the child
  (``os.register_at_fork``) and starts a new one on first use. Objects holding sockets
  (the connection pool) reset themselves the same way through :func:`reset_after_fork`.
* **Context.** Work runs in a copy of the submitting thread's ``contextvars``, so the
  OpenTelemetry span that was current (and LangGraph's config) is current in the worker
  too: decision spans nest under their caller and the request to OPA carries its
  ``traceparent``.
* **Deadlines.** Time spent queued for a worker counts: :func:`queued_since` tells the
  work when it was submitted, so a decision's timeout runs from the call, not from the
  moment a worker picked it up.

Example:
    ```python
    from langchain_opa_guard.engines.workers import Workers

    workers = Workers(8, "my-pool")
    squares = workers.map(lambda x: x * x, range(4))  # [0, 1, 4, 9]
    workers.close()
    ```
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

__all__ = ["Workers", "queued_since", "reset_after_fork", "shared_workers"]

T = TypeVar("T")
R = TypeVar("R")

_queued_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "opa_guard_queued_at", default=None
)


def queued_since() -> float | None:
    """When the running work was handed to a :class:`Workers` pool (``time.monotonic()``).

    ``None`` outside such work. Read once: the value is cleared, so a second decision made
    by the same piece of work gets a fresh deadline.
    """
    value = _queued_at.get()
    if value is not None:
        _queued_at.set(None)
    return value


class _ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_fork_aware: weakref.WeakSet[Any] = weakref.WeakSet()


def reset_after_fork(obj: _ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked from now on.

    The object is held weakly. The callback runs in the child right after ``fork()``
    with only one thread alive: it must not take locks another thread may have held.
    """
    _fork_aware.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_fork_aware):
        obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Workers:
    """A lazily started, bounded thread pool that survives ``fork()``.

    Args:
        max_workers: The most threads it runs at once.
        name: Prefix of the threads' names.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        self.max_workers = max_workers
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        reset_after_fork(self)

    def __repr__(self) -> str:
        return f"Workers({self.max_workers}, {self.name!r})"

    def _after_fork_in_child(self) -> None:
        # The parent's threads do not exist here, and its lock may have been held by one
        # of them: start over. The old executor is left for the garbage collector.
        self._executor = None
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                executor = self._executor
                if executor is None:
                    executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix=self.name)
                    self._executor = executor
        return executor

    def submit(self, fn: Callable[..., R], /, *args: Any) -> Future[R]:
        """Run ``fn(*args)`` in a worker, in a copy of the caller's context."""
        context = contextvars.copy_context()
        context.run(_queued_at.set, time.monotonic())
        return self._pool().submit(context.run, fn, *args)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(item) for item in items]``, concurrently; results in order."""
        futures = [self.submit(fn, item) for item in items]
        return [future.result() for future in futures]

    async def run(self, fn: Callable[..., R], /, *args: Any) -> R:
        """Await ``fn(*args)`` run in a worker; the event loop stays free meanwhile."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self) -> None:
        """Stop the threads once their current work is done; queued work is cancelled.

        A later call starts new threads.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


_shared: dict[str, Workers] = {}
_shared_lock = threading.Lock()


def shared_workers(kind: str, workers: int) -> Workers:
    """The pool of ``kind`` shared by the guards of this process (made with ``workers``
    threads the first time): bounded, fork-safe (a forked child starts threads of its own),
    and carrying the caller's context (trace, LangGraph config) into its threads.

    Example:
        ```python
        shared_workers("io", 32).submit(fn, arg)
        ```
    """
    pool = _shared.get(kind)
    if pool is None:
        with _shared_lock:
            pool = _shared.get(kind)
            if pool is None:
                pool = Workers(workers, f"opa-guard-{kind}")
                _shared[kind] = pool
    return pool
