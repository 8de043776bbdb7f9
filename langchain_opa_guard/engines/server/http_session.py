"""``OPAServer`` over a ``requests.Session``: for everything the default pool does not do.

A user's session carries whatever their network needs (adapters, UNIX sockets, proxies with
authentication, corporate CAs, retries they chose); ``OPAServer(url, session=...)`` sends
every request through it, from a thread of the transport's own. The guard's own rules still
hold: redirects are never followed, ``timeout`` bounds the whole request (body included),
replies over ``max_response_bytes`` are refused, and at most ``max_connections`` requests
are in flight at once. ``requests`` bounds each socket read, not the request (a server that
drips its reply's head a byte at a time would hold it for as long as it likes), so the
caller waits for the request's thread only until the deadline; a request left behind keeps
its connection slot until it ends.

``OPAServer`` also uses a session of its own when an ``HTTP(S)_PROXY`` variable applies to
the OPA URL, so proxies are honoured exactly as ``requests`` honours them.

Example:
    ```python
    import requests
    from langchain_opa_guard import OPAServer

    session = requests.Session()
    session.verify = "/etc/ssl/corporate-ca.pem"
    engine = OPAServer("https://opa.internal:8181", session=session)
    ```
"""

from __future__ import annotations

import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies, select_proxy

from langchain_opa_guard.engines.server.http_pool import ResponseTooLarge, remaining
from langchain_opa_guard.engines.workers import reset_after_fork

__all__ = ["SessionTransport", "environment_proxy", "proxy_session"]


def environment_proxy(url: str) -> str | None:
    """The proxy ``requests`` would use for ``url`` from the environment, or ``None``.

    Reads ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (either case)
    the way ``requests`` does.
    """
    return select_proxy(url, get_environ_proxies(url))  # type: ignore[no-any-return]


class _ContextAdapter(HTTPAdapter):
    """An adapter whose TLS connections use a given ``ssl.SSLContext``."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **proxy_kwargs)


def proxy_session(
    verify: bool | str | ssl.SSLContext,
    cert: str | tuple[str, str] | None,
    context: ssl.SSLContext | None,
    max_connections: int,
) -> requests.Session:
    """A session of the guard's own, used when an environment proxy applies."""
    session = requests.Session()
    if context is not None:
        adapter: HTTPAdapter = _ContextAdapter(context, pool_maxsize=max_connections)
    else:
        adapter = HTTPAdapter(pool_maxsize=max_connections)
        session.verify = verify if isinstance(verify, (bool, str)) else True
        session.cert = cert
    session.mount("https://", adapter)
    session.mount("http://", HTTPAdapter(pool_maxsize=max_connections))
    return session


class SessionTransport:
    """Requests to one server through a ``requests.Session``.

    Args:
        session: The session.
        url: The server's base URL.
        timeout: Seconds a request may take when no deadline is given.
        max_connections: The most requests in flight at once.
        max_response_bytes: Replies larger than this raise :class:`ResponseTooLarge`.
        owned: Close the session with the transport (``False`` for a user's session).
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        timeout: float,
        max_connections: int,
        max_response_bytes: int,
        owned: bool = False,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self.owned = owned
        self._slots = threading.BoundedSemaphore(max_connections)
        self._forked = False
        self._threads: ThreadPoolExecutor | None = None
        self._threads_lock = threading.Lock()
        reset_after_fork(self)

    def _after_fork_in_child(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._forked = True  # the session's pooled sockets are the parent's: drop them first
        self._threads = None  # the parent's threads do not exist here
        self._threads_lock = threading.Lock()

    def _runner(self) -> ThreadPoolExecutor:
        threads = self._threads
        if threads is None:
            with self._threads_lock:
                threads = self._threads
                if threads is None:
                    threads = self._threads = ThreadPoolExecutor(
                        max_workers=self.max_connections, thread_name_prefix="opa-guard-session"
                    )
        return threads

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float | None = None,
        max_bytes: int | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; ``(status, body)``. Raises ``requests`` errors (``OSError``),
        ``TimeoutError`` once ``deadline`` has passed, :class:`ResponseTooLarge`."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        slots = self._slots
        if not slots.acquire(timeout=remaining(deadline)):
            raise TimeoutError("no connection to OPA became free before the deadline")
        try:
            future = self._runner().submit(
                self._exchange, slots, method, path, body, headers, deadline, max_bytes
            )
        except BaseException:
            slots.release()
            raise
        try:
            return future.result(timeout=remaining(deadline))
        except TimeoutError:
            # The request's thread goes on until the server or a socket timeout ends it,
            # holding its slot; this decision does not wait for it.
            if future.cancel():  # never started: its slot is free again
                slots.release()
            raise TimeoutError("the reply did not arrive before the deadline") from None

    def _exchange(
        self,
        slots: threading.BoundedSemaphore,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float,
        max_bytes: int | None,
    ) -> tuple[int, bytes]:
        """One request, in a thread of the transport's own; frees its slot when it ends."""
        try:
            if self._forked:
                self._forked = False
                self.session.close()  # empties its pools; the session stays usable
            response = self.session.request(
                method,
                self.url + path,
                data=body,
                headers=headers,
                timeout=remaining(deadline),
                allow_redirects=False,
                stream=True,
                # Passed explicitly: with only ``session.verify`` set, ``requests`` lets a
                # REQUESTS_CA_BUNDLE in the environment replace the CA the user chose.
                verify=self.session.verify,
            )
            try:
                limit = self.max_response_bytes if max_bytes is None else max_bytes
                return response.status_code, self._read(response, deadline, limit)
            except urllib3.exceptions.ReadTimeoutError:
                raise TimeoutError("the reply did not arrive before the deadline") from None
            except urllib3.exceptions.HTTPError as exc:  # cut short, undecodable
                raise ConnectionError(
                    f"the reply could not be read ({type(exc).__name__})"
                ) from None
            finally:
                response.close()
        finally:
            slots.release()

    def _read(self, response: requests.Response, deadline: float, limit: int) -> bytes:
        raw = response.raw
        read = getattr(raw, "read1", None) or raw.read
        connection = getattr(raw, "connection", None)
        chunks: list[bytes] = []
        size = 0
        while True:
            left = remaining(deadline)
            sock = getattr(connection, "sock", None)
            if sock is not None:
                # Bound each read by what is left of the deadline, so a server that drips
                # its reply cannot stretch the request past it.
                sock.settimeout(left)
            chunk = read(65536, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(size)
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Close the session if the transport created it (a user's session stays open)."""
        threads, self._threads = self._threads, None
        if threads is not None:
            # Requests already queued still run (and free their slots); nothing waits.
            threads.shutdown(wait=False)
        if self.owned:
            self.session.close()
