"""A real OPA server reached over its REST Data API.

One client object with sync and async twins sharing their logic: ``decide`` and
``adecide`` build the same request and read the reply with the same code. Both send over
one pool of kept-alive standard-library connections (the leanest client for a short
loopback POST): ``adecide`` hands the request to a worker thread and awaits it, so the
event loop never blocks. With a custom ``transport``/``async_transport`` (a UNIX socket, a
proxy) httpx carries the requests instead.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import ssl
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from opentelemetry import propagate

from langchain_opa_guard.decision import Decision, EngineError, ErrorType
from langchain_opa_guard.engine import DEFAULT_POLICY, encode_input, normalize_policy_path
from langchain_opa_guard.http_pool import ConnectionPool, ResponseTooLarge
from langchain_opa_guard.policy_sources import PolicyNotFoundError, defines

__all__ = ["OPAServer"]

logger = logging.getLogger(__name__)

_JSON = "application/json"


class OPAServer:
    """Evaluate the guard's policy on an OPA server (sidecar or central).

    Each decision is one ``POST /v1/data/{policy}`` with ``{"input": ...}``; the calls of a
    turn are sent concurrently over the kept-alive pool. Every failure (connection refused,
    timeout, HTTP error, undefined decision, malformed reply) is a deny whose ``error`` says
    what failed.

    Args:
        url: Base URL of the OPA server.
        policy: Decision path, ``agent/authz/decision`` or ``data.agent.authz.decision``.
        token: Bearer token for OPA's ``--authentication=token``.
        timeout: Seconds a decision may take, connection included.
        verify: TLS verification: ``True``, a CA bundle path, or an ``ssl.SSLContext``.
        cert: Client certificate for mutual TLS (path, or ``(cert, key)`` paths).
        headers: Extra HTTP headers sent with every request.
        max_connections: Size of the connection pool.
        propagate_context: Send the current trace context (``traceparent``) to OPA so its
            spans join the caller's trace.
        max_response_bytes: Replies larger than this are refused (fail closed).
        provenance: Ask OPA for provenance, so each decision carries the bundle revision.
        batch: Decide the calls of a turn in one request: ``True`` for the rule
            ``batch_decisions`` beside the decision (``agent/authz/batch_decisions``), or
            its path. The rule takes the shared input with ``input.calls`` and returns
            ``{call_id: decision}`` (``server-policies/batch.rego``; see the README). One
            request and one decision-log entry per turn instead of one per call.
        verify_policy: At start-up, check that a loaded policy defines the decision path
            and raise :class:`PolicyNotFoundError` if none does (an OPA that cannot be
            reached yet is only logged: decisions fail closed until it answers).
        transport, async_transport: httpx transports (for UNIX sockets or proxies); with
            ``transport`` the sync side uses httpx too. An async transport is bound to the
            event loop it first runs on: pass a factory (``httpx.AsyncHTTPTransport`` or a
            function) to get one per event loop.

    Example:
        ```python
        from langchain_opa_guard import OPAServer

        opa = OPAServer("http://localhost:8181", policy="agent/authz/decision")
        decision = opa.decide({"tool": {"name": "delete_customer", "args": {}}, "user": None})
        if not decision.allow:
            print(decision.reasons)
        ```
    """

    engine_name = "opa"
    in_process = False

    def __init__(
        self,
        url: str = "http://localhost:8181",
        *,
        policy: str = DEFAULT_POLICY,
        token: str | None = None,
        timeout: float = 2.0,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 32,
        propagate_context: bool = True,
        max_response_bytes: int = 1 << 20,
        provenance: bool = True,
        verify_policy: bool = True,
        batch: bool | str = False,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport
        | Callable[[], httpx.AsyncBaseTransport]
        | None = None,
    ) -> None:
        self.url = _without_credentials(url.rstrip("/"))
        self.policy = normalize_policy_path(policy)
        self.timeout = timeout
        self.propagate_context = propagate_context
        query = "?provenance=true" if provenance else ""
        self._query = query
        self._endpoint = f"{self.url}/v1/data/{self.policy}{query}"
        self._headers = {"Content-Type": _JSON, "Accept": _JSON, **(headers or {})}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._verify = _ssl_context(verify, cert)
        self._async_transport = async_transport
        self.max_response_bytes = max_response_bytes
        self._path = f"/v1/data/{self.policy}{query}"
        self._client: httpx.Client | None = None
        self._pool: ConnectionPool | None = None
        if transport is not None:
            self._client = httpx.Client(
                timeout=timeout, limits=self._limits, verify=self._verify, transport=transport
            )
        else:
            context = self._verify if isinstance(self._verify, ssl.SSLContext) else None
            if context is None and self._verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._pool = ConnectionPool(
                self.url,
                timeout=timeout,
                ssl_context=context,
                max_idle=max_connections,
                max_response_bytes=max_response_bytes,
            )
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._aclients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._threads: ThreadPoolExecutor | None = None
        self._max_workers = max_connections
        self.batch_path: str | None = None
        if batch:
            parent = self.policy.rsplit("/", 1)[0] if "/" in self.policy else ""
            self.batch_path = normalize_policy_path(
                batch if isinstance(batch, str) else f"{parent}/batch_decisions"
            )
        if verify_policy:
            self.verify_policy()

    def __repr__(self) -> str:
        return f"OPAServer({self.url!r}, policy={self.policy!r})"

    # -- sync -------------------------------------------------------------------------

    def decide(self, input: Mapping[str, Any]) -> Decision:
        """Ask OPA for the decision on one input document."""
        try:
            body = encode_input(input)
            if self._pool is not None:
                status, content = self._pool.request(
                    "POST", self._path, body, self._request_headers()
                )
            else:
                assert self._client is not None
                with self._client.stream(
                    "POST", self._endpoint, content=body, headers=self._request_headers()
                ) as response:
                    status = response.status_code
                    content = _read_capped_sync(response, self.max_response_bytes)
            return self._read(status, content)
        except EngineError as exc:
            return self._failure(exc)
        except ResponseTooLarge:
            return self._failure(_too_large(self.max_response_bytes))
        except (OSError, http.client.HTTPException, httpx.HTTPError) as exc:
            return self._failure(_transport_error(exc, self.timeout))
        except Exception as exc:  # noqa: BLE001 - fail closed on anything else
            logger.warning("the request to OPA failed unexpectedly: %s", type(exc).__name__)
            return self._failure(_transport_error(exc, self.timeout))

    @property
    def batches(self) -> bool:
        """Whether a turn's calls are decided in one request."""
        return self.batch_path is not None

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Decide every input of a turn: in one request with ``batch``, else concurrently."""
        if len(inputs) <= 1:
            return [self.decide(i) for i in inputs]
        shared = self._batchable(inputs)
        if shared is not None:
            return self._batch_reply(inputs, lambda body: self._post(self._batch_url, body), shared)
        return list(self._executor().map(self.decide, inputs))

    # -- async ------------------------------------------------------------------------

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        """Async twin of :meth:`decide`; never blocks the event loop."""
        try:
            body = encode_input(input)
            if self._pool is not None and self._async_transport is None:
                # The kept-alive pool in a worker thread: measured here about twice as fast
                # per decision as httpx's async client, and far faster under concurrency
                # (httpcore's pool assigns queued requests in quadratic time). The trace
                # context is read here, on the event loop, and sent with the request.
                headers = self._request_headers()
                loop = asyncio.get_running_loop()
                status, content = await loop.run_in_executor(
                    self._executor(), self._pool.request, "POST", self._path, body, headers
                )
                return self._read(status, content)
            client = self._async_client()
            async with client.stream(
                "POST", self._endpoint, content=body, headers=self._request_headers()
            ) as response:
                content = await _read_capped(response, self.max_response_bytes)
            return self._read(response.status_code, content)
        except EngineError as exc:
            return self._failure(exc)
        except ResponseTooLarge:
            return self._failure(_too_large(self.max_response_bytes))
        except (OSError, http.client.HTTPException, httpx.HTTPError) as exc:
            return self._failure(_transport_error(exc, self.timeout))
        except Exception as exc:  # noqa: BLE001 - fail closed on anything else
            logger.warning("the request to OPA failed unexpectedly: %s", type(exc).__name__)
            return self._failure(_transport_error(exc, self.timeout))

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Async twin of :meth:`decide_many`."""
        if len(inputs) <= 1:
            return [await self.adecide(i) for i in inputs]
        shared = self._batchable(inputs)
        if shared is not None and self._pool is not None:
            loop = asyncio.get_running_loop()
            headers = self._request_headers()
            return await loop.run_in_executor(
                self._executor(),
                lambda: self._batch_reply(
                    inputs, lambda body: self._post(self._batch_url, body, headers), shared
                ),
            )
        return list(await asyncio.gather(*(self.adecide(i) for i in inputs)))

    # -- a turn in one request ------------------------------------------------------

    @property
    def _batch_url(self) -> str:
        return f"/v1/data/{self.batch_path}{self._query}"

    def _batchable(self, inputs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """The shared part of a turn's inputs, when they can go in one request."""
        if self.batch_path is None:
            return None
        shared = {k: v for k, v in inputs[0].items() if k != "tool"}
        ids = []
        for document in inputs:
            tool = document.get("tool")
            if not isinstance(tool, Mapping) or not isinstance(tool.get("call_id"), str):
                return None
            ids.append(tool["call_id"])
            if {k: v for k, v in document.items() if k != "tool"} != shared:
                return None
        return shared if len(set(ids)) == len(ids) else None

    def _post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        return self._send("POST", path, body, headers or self._request_headers())

    def _batch_reply(
        self,
        inputs: Sequence[Mapping[str, Any]],
        post: Callable[[bytes], tuple[int, bytes]],
        shared: Mapping[str, Any],
    ) -> list[Decision]:
        calls = [document["tool"] for document in inputs]
        try:
            status, content = post(encode_input({**shared, "calls": calls}))
            reply = self._reply(status, content)
        except EngineError as exc:
            return [self._failure(exc)] * len(inputs)
        except ResponseTooLarge:
            return [self._failure(_too_large(self.max_response_bytes))] * len(inputs)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything else
            return [self._failure(_transport_error(exc, self.timeout))] * len(inputs)
        results = reply.get("result")
        if not isinstance(results, Mapping):
            error = EngineError(ErrorType.UNDEFINED, "the turn's batch decision is undefined")
            return [self._failure(error)] * len(inputs)
        decision_id, revision = _ids(reply)
        decisions = []
        for call in calls:
            try:
                if call["call_id"] not in results:
                    raise EngineError(
                        ErrorType.UNDEFINED,
                        f"the decision {self.policy!r} is undefined for this input",
                    )
                decisions.append(
                    Decision.from_result(
                        results[call["call_id"]],
                        decision_id=decision_id,
                        engine=self.engine_name,
                        policy=self.policy,
                        revision=revision,
                    )
                )
            except EngineError as exc:
                decisions.append(self._failure(exc))
        return decisions

    # -- lifecycle --------------------------------------------------------------------

    def health(self) -> bool:
        """``True`` when ``GET /health`` answers 200."""
        try:
            return self._send("GET", "/health")[0] == 200
        except (OSError, http.client.HTTPException, httpx.HTTPError, ResponseTooLarge):
            return False

    def verify_policy(self) -> bool:
        """Check that OPA has a policy (or data) defining the decision path.

        Returns ``False`` when OPA cannot be asked (down, or refusing this client).

        Raises:
            PolicyNotFoundError: OPA answered, and nothing defines the decision path.
        """
        try:
            status, content = self._send("GET", "/v1/policies")
            if status != 200:
                logger.warning("could not list OPA's policies (HTTP %s)", status)
                return False
            modules = [m.get("raw", "") for m in json.loads(content).get("result", [])]
            defined = defines(modules, {}, self.policy)
            if not defined:
                status, content = self._send("GET", f"/v1/data/{self.policy}")
                defined = status == 200 and "result" in json.loads(content)
        except (OSError, http.client.HTTPException, httpx.HTTPError, ResponseTooLarge, ValueError):
            logger.warning("OPA is not reachable yet; the decision path is not verified")
            return False
        if self.batch_path is not None and not defines(modules, {}, self.batch_path):
            raise PolicyNotFoundError(
                f"no policy loaded in OPA defines the batch rule {self.batch_path!r}"
            )
        if defined:
            return True
        raise PolicyNotFoundError(f"no policy loaded in OPA defines {self.policy!r}")

    def current_revision(self) -> str | None:
        """The revision of the bundles OPA serves now, or ``None`` (no bundles, or no answer)."""
        try:
            status, content = self._send("GET", "/v1/data/system/bundles")
            if status != 200:
                return None
            return _revision_of(json.loads(content).get("result"))
        except (OSError, http.client.HTTPException, httpx.HTTPError, ResponseTooLarge, ValueError):
            return None

    def query(self, path: str, input: Mapping[str, Any]) -> Any:
        """Evaluate another document (``agent/authz/visible_tools``); ``None`` if undefined.

        Raises:
            EngineError: The request failed or OPA answered with an error.
        """
        path = normalize_policy_path(path)
        try:
            status, content = self._send(
                "POST", f"/v1/data/{path}", encode_input(input), self._request_headers()
            )
        except ResponseTooLarge:
            raise _too_large(self.max_response_bytes) from None
        except (OSError, http.client.HTTPException, httpx.HTTPError) as exc:
            raise _transport_error(exc, self.timeout) from None
        if status in (401, 403):
            raise EngineError(ErrorType.UNAUTHORIZED, f"OPA refused the client (HTTP {status})")
        if status != 200:
            raise EngineError(ErrorType.HTTP_STATUS, f"OPA answered HTTP {status}")
        try:
            return json.loads(content).get("result")
        except (ValueError, AttributeError):
            raise EngineError(ErrorType.MALFORMED, "OPA's reply is not valid JSON") from None

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        headers = headers if headers is not None else dict(self._headers)
        if self._pool is not None:
            return self._pool.request(method, path, body, headers)
        assert self._client is not None
        with self._client.stream(method, self.url + path, content=body, headers=headers) as reply:
            return reply.status_code, _read_capped_sync(reply, self.max_response_bytes)

    def close(self) -> None:
        """Close the sync pool (async pools close with their event loop)."""
        if self._client is not None:
            self._client.close()
        if self._pool is not None:
            self._pool.close()
        if self._threads is not None:
            self._threads.shutdown(wait=False)

    async def aclose(self) -> None:
        """Close this event loop's async pool."""
        loop = asyncio.get_running_loop()
        client = self._aclients.pop(loop, None)
        if client is not None:
            await client.aclose()

    def __enter__(self) -> OPAServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared logic -----------------------------------------------------------------

    def _request_headers(self) -> dict[str, str]:
        if not self.propagate_context:
            return self._headers
        headers = dict(self._headers)
        propagate.inject(headers)
        return headers

    def _read(self, status: int, content: bytes) -> Decision:
        reply = self._reply(status, content)
        if "result" not in reply:
            raise EngineError(
                ErrorType.UNDEFINED,
                f"the decision {self.policy!r} is undefined for this input",
            )
        decision_id, revision = _ids(reply)
        return Decision.from_result(
            reply["result"],
            decision_id=decision_id,
            engine=self.engine_name,
            policy=self.policy,
            revision=revision,
        )

    def _reply(self, status: int, content: bytes) -> dict[str, Any]:
        """OPA's reply as an object; raises for HTTP errors and unreadable bodies."""
        if status in (401, 403):
            raise EngineError(
                ErrorType.UNAUTHORIZED, f"OPA refused the client's credentials (HTTP {status})"
            )
        if status != 200:
            raise EngineError(ErrorType.HTTP_STATUS, f"OPA answered HTTP {status}")
        try:
            reply = json.loads(content)
        except ValueError:
            raise EngineError(ErrorType.MALFORMED, "OPA's reply is not valid JSON") from None
        if not isinstance(reply, dict):
            raise EngineError(ErrorType.MALFORMED, "OPA's reply is not a JSON object")
        return reply

    def _failure(self, exc: EngineError) -> Decision:
        return Decision.failure(
            exc.error_type, exc.reason, engine=self.engine_name, policy=self.policy
        )

    def _executor(self) -> ThreadPoolExecutor:
        if self._threads is None:
            with self._lock:
                if self._threads is None:
                    self._threads = ThreadPoolExecutor(
                        max_workers=self._max_workers, thread_name_prefix="opa-guard"
                    )
        return self._threads

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = httpx.AsyncClient(
                timeout=self.timeout,
                limits=self._limits,
                verify=self._verify,
                transport=_transport_for_loop(self._async_transport),
            )
            self._aclients[loop] = client
        return client


def _transport_error(exc: BaseException, timeout: float) -> EngineError:
    if isinstance(exc, (httpx.TimeoutException, TimeoutError, socket.timeout)):
        return EngineError(ErrorType.TIMEOUT, f"OPA did not answer within {timeout:g}s")
    if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError, socket.gaierror)):
        return EngineError(ErrorType.UNREACHABLE, "OPA is unreachable")
    if isinstance(exc, ssl.SSLError):
        return EngineError(ErrorType.UNREACHABLE, "the TLS handshake with OPA failed")
    if isinstance(
        exc,
        (
            httpx.RemoteProtocolError,
            httpx.ReadError,
            httpx.WriteError,
            ConnectionError,
            http.client.HTTPException,
        ),
    ):
        return EngineError(ErrorType.UNREACHABLE, "the connection to OPA failed")
    if isinstance(exc, OSError):
        return EngineError(ErrorType.UNREACHABLE, "OPA is unreachable")
    return EngineError(ErrorType.ENGINE, f"the request to OPA failed ({type(exc).__name__})")


def _revision_of(bundles: Any) -> str | None:
    """``{"name": {"revision": "r1"}}`` (or OPA's ``manifest`` form) -> ``"r1"``."""
    if not isinstance(bundles, dict) or not bundles:
        return None
    revisions = []
    for name in sorted(bundles):
        info = bundles[name] if isinstance(bundles[name], dict) else {}
        revision = info.get("revision")
        if revision is None and isinstance(info.get("manifest"), dict):
            revision = info["manifest"].get("revision")
        revisions.append(f"{name}@{revision}" if len(bundles) > 1 else str(revision))
    return ",".join(revisions)


def _too_large(limit: int) -> EngineError:
    return EngineError(ErrorType.MALFORMED, f"OPA's reply is larger than {limit} bytes")


def _ids(reply: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The decision id and bundle revision of an OPA reply."""
    decision_id = reply.get("decision_id")
    provenance = reply.get("provenance")
    revision = _revision_of(provenance.get("bundles")) if isinstance(provenance, dict) else None
    return (decision_id if isinstance(decision_id, str) else None), revision


def _transport_for_loop(
    transport: httpx.AsyncBaseTransport | Callable[[], httpx.AsyncBaseTransport] | None,
) -> httpx.AsyncBaseTransport | None:
    if transport is None or isinstance(transport, httpx.AsyncBaseTransport):
        return transport
    return transport()


def _without_credentials(url: str) -> str:
    """Drop ``user:password@`` from a URL: credentials go in ``token=``, never in a URL
    that ends up in reprs and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    logger.warning("credentials in the OPA URL are ignored; pass token= instead")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _read_capped_sync(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _ssl_context(
    verify: bool | str | ssl.SSLContext, cert: str | tuple[str, str] | None
) -> bool | ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    elif cert is not None:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    else:
        return verify
    if cert is not None:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        context.load_cert_chain(certfile, keyfile)
    return context
