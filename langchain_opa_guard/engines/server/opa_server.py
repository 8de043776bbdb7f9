"""A real OPA server reached over its REST Data API.

One client object with sync and async twins sharing their logic: ``decide`` and
``adecide`` build the same request and read the reply with the same code. By default both
send over one pool of kept-alive standard-library connections (the leanest client for a
short loopback POST); ``adecide`` hands the request to one of the engine's own worker
threads and awaits it, so the event loop never blocks. A user's ``requests.Session`` (UNIX
sockets, proxies with authentication, custom adapters) carries the requests instead when
given, and a session of the engine's own does when an ``HTTP(S)_PROXY`` variable applies.

Why one module: the client is one class whose sync and async paths share the request, the
reply and the mapping of every failure to an ``ErrorType``; the connection pool and the
session are in :mod:`.http_pool` and :mod:`.http_session`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from opentelemetry import propagate

from langchain_opa_guard.decision import Decision, EngineError, ErrorType
from langchain_opa_guard.engines.engine import (
    DEFAULT_POLICY,
    encode_input,
    normalize_policy_path,
    shared_part,
)
from langchain_opa_guard.engines.policy_sources import PolicyNotFoundError, defines
from langchain_opa_guard.engines.server.http_pool import ConnectionPool, ResponseTooLarge, Transport
from langchain_opa_guard.engines.server.http_session import (
    SessionTransport,
    environment_proxy,
    proxy_session,
)
from langchain_opa_guard.engines.workers import Workers, queued_since

__all__ = ["OPAServer"]

logger = logging.getLogger(__name__)

_JSON = "application/json"

# OPA lists every loaded module with its source and AST (about ten times the source): this
# reply, asked for once when the decision path is checked, may be larger than a decision's.
_POLICY_LIST_BYTES = 64 << 20


class OPAServer:
    """Evaluate the guard's policy on an OPA server (sidecar or central).

    Each decision is one ``POST /v1/data/{policy}`` with ``{"input": ...}``; the calls of a
    turn are sent concurrently over the kept-alive pool. Every failure (connection refused,
    timeout, HTTP error, redirect, undefined decision, malformed reply) is a deny whose
    ``error`` says what failed.

    The engine owns a bounded pool of worker threads and at most ``max_connections``
    connections; ``close()`` (or ``with``/``async with``) releases both, and a later call
    opens them again. It is safe across ``fork()``: a child process (gunicorn
    ``--preload``, Celery prefork, ``multiprocessing``) never reuses its parent's
    connections or threads.

    Args:
        url: Base URL of the OPA server.
        policy: Decision path, ``agent/authz/decision`` or ``data.agent.authz.decision``.
        token: Bearer token for OPA's ``--authentication=token``.
        timeout: Seconds a decision may take, counted from the call: waiting for a free
            connection or worker, connecting and reading the reply all count.
        verify: TLS verification: ``True``, a CA bundle path, or an ``ssl.SSLContext``.
        cert: Client certificate for mutual TLS (path, or ``(cert, key)`` paths).
        headers: Extra HTTP headers sent with every request.
        max_connections: The most connections (and requests in flight) to OPA at once;
            also the number of worker threads. Further requests wait, within ``timeout``.
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
        session: A ``requests.Session`` to send every request through (adapters, UNIX
            sockets, proxies with authentication, corporate CAs); TLS settings then belong
            to the session, so ``verify``/``cert`` must be left alone. It stays open when
            the engine closes. Without it, ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``
            are honoured as ``requests`` honours them (read when the engine is created).

    Raises:
        ValueError: An argument is out of range (``timeout``, ``max_connections``,
            ``max_response_bytes``), or ``verify``/``cert`` were given with ``session``.

    Example:
        ```python
        from langchain_opa_guard import OPAServer

        with OPAServer("http://localhost:8181", policy="agent/authz/decision") as opa:
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
        session: requests.Session | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not (isinstance(max_connections, int) and max_connections >= 1):
            raise ValueError(f"max_connections must be at least 1, got {max_connections!r}")
        if not (isinstance(max_response_bytes, int) and max_response_bytes >= 1):
            raise ValueError(f"max_response_bytes must be positive, got {max_response_bytes!r}")
        if session is not None and (verify is not True or cert is not None):
            raise ValueError(
                "verify= and cert= configure the built-in client; with session= set them on "
                "the session (session.verify, session.cert)"
            )
        self.url = _without_credentials(url.rstrip("/"))
        self.policy = normalize_policy_path(policy)
        self.timeout = timeout
        self.propagate_context = propagate_context
        query = "?provenance=true" if provenance else ""
        self._query = query
        self._headers = {"Content-Type": _JSON, "Accept": _JSON, **(headers or {})}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._path = f"/v1/data/{self.policy}{query}"
        self._transport = self._new_transport(verify, cert, session)
        self.workers = Workers(max_connections, f"opa-guard-{id(self):x}")
        """The engine's own worker threads (``max_connections`` of them): ``adecide`` runs
        its requests there, and the guard fans a turn's calls out on them."""
        self.batch_path: str | None = None
        if batch:
            parent = self.policy.rsplit("/", 1)[0] if "/" in self.policy else ""
            self.batch_path = normalize_policy_path(
                batch if isinstance(batch, str) else f"{parent}/batch_decisions"
            )
        if verify_policy:
            self.verify_policy()

    def _new_transport(
        self,
        verify: bool | str | ssl.SSLContext,
        cert: str | tuple[str, str] | None,
        session: requests.Session | None,
    ) -> Transport:
        timeout, connections, size = self.timeout, self.max_connections, self.max_response_bytes
        if session is not None:
            return SessionTransport(
                session,
                self.url,
                timeout=timeout,
                max_connections=connections,
                max_response_bytes=size,
            )
        context = _ssl_context(verify, cert)
        if environment_proxy(self.url) is not None:
            logger.info("requests to OPA go through the proxy set in the environment")
            own_context = context if isinstance(verify, ssl.SSLContext) else None
            return SessionTransport(
                proxy_session(verify, cert, own_context, connections),
                self.url,
                timeout=timeout,
                max_connections=connections,
                max_response_bytes=size,
                owned=True,
            )
        return ConnectionPool(
            self.url,
            timeout=timeout,
            ssl_context=context,
            max_connections=connections,
            max_response_bytes=size,
        )

    def __repr__(self) -> str:
        return f"OPAServer({self.url!r}, policy={self.policy!r})"

    # -- sync -------------------------------------------------------------------------

    def decide(self, input: Mapping[str, Any]) -> Decision:
        """Ask OPA for the decision on one input document."""
        deadline = self._deadline()
        try:
            body = encode_input(input)
            status, content = self._transport.request(
                "POST", self._path, body, self._request_headers(), deadline
            )
            return self._read(status, content)
        except Exception as exc:  # noqa: BLE001 - every failure is a fail-closed deny
            return self._failed(exc)

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
            return self._batch_reply(inputs, shared, self._request_headers(), self._deadline())
        return self.workers.map(self.decide, inputs)

    # -- async ------------------------------------------------------------------------

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        """Async twin of :meth:`decide`; never blocks the event loop."""
        deadline = time.monotonic() + self.timeout
        try:
            body = encode_input(input)
            # The trace context is read here, on the event loop, and sent with the request
            # from one of the engine's worker threads.
            headers = self._request_headers()
            status, content = await self.workers.run(
                self._transport.request, "POST", self._path, body, headers, deadline
            )
            return self._read(status, content)
        except Exception as exc:  # noqa: BLE001 - every failure is a fail-closed deny
            return self._failed(exc)

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Async twin of :meth:`decide_many`."""
        if len(inputs) <= 1:
            return [await self.adecide(i) for i in inputs]
        shared = self._batchable(inputs)
        if shared is not None:
            deadline = time.monotonic() + self.timeout
            headers = self._request_headers()
            return await self.workers.run(self._batch_reply, inputs, shared, headers, deadline)
        return list(await asyncio.gather(*(self.adecide(i) for i in inputs)))

    # -- a turn in one request ------------------------------------------------------

    @property
    def _batch_url(self) -> str:
        return f"/v1/data/{self.batch_path}{self._query}"

    def _batchable(self, inputs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """The shared part of a turn's inputs, when they can go in one request."""
        if self.batch_path is None:
            return None
        return shared_part(inputs)

    def _batch_reply(
        self,
        inputs: Sequence[Mapping[str, Any]],
        shared: Mapping[str, Any],
        headers: dict[str, str],
        deadline: float,
    ) -> list[Decision]:
        calls = [document["tool"] for document in inputs]
        try:
            body = encode_input({**shared, "calls": calls})
            status, content = self._transport.request(
                "POST", self._batch_url, body, headers, deadline
            )
            reply = self._reply(status, content)
        except Exception as exc:  # noqa: BLE001 - every failure is a fail-closed deny
            return [self._failed(exc)] * len(inputs)
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

    # -- other documents, health, revision ------------------------------------------

    def health(self) -> bool:
        """``True`` when ``GET /health`` answers 200."""
        try:
            return self._send("GET", "/health")[0] == 200
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False

    def verify_policy(self) -> bool:
        """Check that OPA has a policy (or data) defining the decision path.

        Returns ``False`` when OPA cannot be asked (down, or refusing this client).

        Raises:
            PolicyNotFoundError: OPA answered, and nothing defines the decision path.
        """
        try:
            status, content = self._transport.request(
                "GET",
                "/v1/policies",
                None,
                dict(self._headers),
                self._deadline(),
                max_bytes=max(self.max_response_bytes, _POLICY_LIST_BYTES),
            )
            if status != 200:
                logger.warning("could not list OPA's policies (HTTP %s)", status)
                return False
            modules = [m.get("raw", "") for m in json.loads(content).get("result", [])]
            defined = defines(modules, {}, self.policy)
            if not defined:
                status, content = self._send("GET", f"/v1/data/{self.policy}")
                defined = status == 200 and "result" in json.loads(content)
        except Exception:  # noqa: BLE001 - not reachable yet: decisions fail closed meanwhile
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
        except Exception:  # noqa: BLE001 - no answer means no known revision
            return None

    async def acurrent_revision(self) -> str | None:
        """Async twin of :meth:`current_revision`; never blocks the event loop."""
        return await self.workers.run(self.current_revision)

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
            reply = self._reply(status, content)
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is an EngineError
            failure = self._failed(exc)
            raise EngineError(failure.error or ErrorType.ENGINE, _reason(failure)) from None
        return reply.get("result")

    async def aquery(self, path: str, input: Mapping[str, Any]) -> Any:
        """Async twin of :meth:`query`; never blocks the event loop."""
        return await self.workers.run(self.query, path, input)

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections and stop the worker threads (a user's session stays
        open). A later call opens them again."""
        self._transport.close()
        self.workers.close()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        self.close()

    def __enter__(self) -> OPAServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> OPAServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- shared logic -----------------------------------------------------------------

    def _deadline(self) -> float:
        """The end of the time allowed, counted from when the work was handed to one of
        the engine's (or the guard's) workers, else from now."""
        return (queued_since() or time.monotonic()) + self.timeout

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        headers = headers if headers is not None else dict(self._headers)
        return self._transport.request(method, path, body, headers, self._deadline())

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
        if 300 <= status < 400:
            raise EngineError(
                ErrorType.REDIRECT,
                f"OPA answered with a redirect (HTTP {status}), which is not followed",
            )
        if status == 500:
            # OPA answered, with an error: an evaluation that failed for this input (a
            # conflict the arguments caused, say) is no transport failure, so fail_open
            # never applies to it.
            raise EngineError(ErrorType.ENGINE, _internal_error_reason(content))
        if status >= 500:
            raise EngineError(ErrorType.SERVER_ERROR, f"OPA answered HTTP {status}")
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

    def _failed(self, exc: Exception) -> Decision:
        """The fail-closed deny for anything that went wrong while deciding."""
        if isinstance(exc, EngineError):
            return self._failure(exc)
        if isinstance(exc, ResponseTooLarge):
            return self._failure(_too_large(self.max_response_bytes))
        if not isinstance(exc, (OSError, http.client.HTTPException)):
            logger.warning("the request to OPA failed unexpectedly: %s", type(exc).__name__)
        return self._failure(_transport_error(exc, self.timeout))


_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


def _internal_error_reason(content: bytes) -> str:
    """The reason for OPA's HTTP 500: its evaluation error's code where it names one
    (``eval_conflict_error``), never its message (which quotes the policy)."""
    codes: list[str] = []
    try:
        body = json.loads(content[:65536])
        errors = body.get("errors") if isinstance(body, dict) else None
        for error in errors if isinstance(errors, list) else ():
            code = error.get("code") if isinstance(error, dict) else None
            if isinstance(code, str) and _ERROR_CODE.fullmatch(code) and code not in codes:
                codes.append(code)
    except ValueError:
        pass
    named = f", {', '.join(codes[:3])}" if codes else ""
    return f"OPA could not evaluate the policy for this input (HTTP 500{named})"


def _reason(decision: Decision) -> str:
    text = decision.reasons[0] if decision.reasons else "the request to OPA failed"
    return text.removeprefix("policy engine failed: ")


def _transport_error(exc: BaseException, timeout: float) -> EngineError:
    if isinstance(exc, (requests.exceptions.Timeout, TimeoutError, socket.timeout)):
        return EngineError(ErrorType.TIMEOUT, f"OPA did not answer within {timeout:g}s")
    if isinstance(exc, requests.exceptions.ProxyError):
        return EngineError(ErrorType.UNREACHABLE, "the proxy to OPA failed")
    if isinstance(exc, (ssl.SSLError, requests.exceptions.SSLError)):
        return EngineError(ErrorType.UNREACHABLE, "the TLS handshake with OPA failed")
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return EngineError(ErrorType.UNREACHABLE, "OPA is unreachable")
    if isinstance(exc, requests.exceptions.ConnectionError):
        cause = exc.args[0] if exc.args else None
        if isinstance(cause, urllib3.exceptions.ProtocolError):  # connected, then cut off
            return EngineError(ErrorType.UNREACHABLE, "the connection to OPA failed")
        return EngineError(ErrorType.UNREACHABLE, "OPA is unreachable")
    if isinstance(
        exc,
        (ConnectionError, http.client.HTTPException, requests.exceptions.RequestException),
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


def _ssl_context(
    verify: bool | str | ssl.SSLContext, cert: str | tuple[str, str] | None
) -> ssl.SSLContext | None:
    """The TLS context of the built-in client (``None``: the default verifying one)."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    elif cert is not None or verify is False:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    else:
        return None
    if cert is not None:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        context.load_cert_chain(certfile, keyfile)
    return context
