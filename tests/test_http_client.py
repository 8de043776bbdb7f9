"""The HTTP client behaves like the ones users know: proxies from the environment as
``requests`` reads them, redirects refused, a real connection cap, and a user's
``requests.Session`` (here with a UNIX-socket adapter) carrying sync and async alike."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from conftest import POLICIES
from fault_proxy import FaultProxy
from opa_process import opa_binary, stop_process
from requests.adapters import HTTPAdapter
from test_load import READ

from langchain_opa_guard import Decision, ErrorType, OPAServer

PROXY_VARIABLES = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def forward_proxy(opa_url: str) -> Iterator[FaultProxy]:
    """A forward proxy (it passes every request on to OPA, whatever URL it names)."""
    with FaultProxy(opa_url) as running:
        yield running


def through(proxy: FaultProxy, since: int) -> list[str]:
    """The request targets the proxy received since ``since``."""
    with proxy.lock:
        return [path for _, path, _, _ in proxy.requests[since:]]


def both(engine: OPAServer) -> tuple[Decision, Decision]:
    return engine.decide(READ), asyncio.run(engine.adecide(READ))


# -- proxies from the environment ----------------------------------------------------------


def test_http_proxy_from_the_environment_is_used(
    clean_env: pytest.MonkeyPatch, forward_proxy: FaultProxy, opa_url: str
) -> None:
    clean_env.setenv("HTTP_PROXY", forward_proxy.url)
    before = len(forward_proxy.requests)
    requests.get(f"{opa_url}/health", timeout=5)  # what requests itself does
    assert through(forward_proxy, before) == [f"{opa_url}/health"]
    before = len(forward_proxy.requests)
    engine = OPAServer(opa_url)
    sync, async_ = both(engine)
    assert sync.allow and async_.allow
    sent = through(forward_proxy, before)
    assert f"{opa_url}/v1/policies" in sent  # the start-up check went the same way
    assert sent.count(f"{opa_url}/v1/data/agent/authz/decision?provenance=true") == 2
    engine.close()


def test_proxy_credentials_in_the_variable_are_sent_to_the_proxy(
    clean_env: pytest.MonkeyPatch, forward_proxy: FaultProxy, opa_url: str
) -> None:
    host = forward_proxy.url.removeprefix("http://")
    clean_env.setenv("http_proxy", f"http://squid:s3cret@{host}")
    before = len(forward_proxy.requests)
    engine = OPAServer(opa_url, verify_policy=False)
    assert engine.decide(READ).allow
    (_, _, headers, _), *_ = forward_proxy.requests[before:]
    assert headers.get("Proxy-Authorization", "").startswith("Basic ")
    engine.close()


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*", "127.0.0.0/8"])
def test_no_proxy_is_honoured_like_requests(
    clean_env: pytest.MonkeyPatch, forward_proxy: FaultProxy, opa_url: str, no_proxy: str
) -> None:
    clean_env.setenv("HTTP_PROXY", forward_proxy.url)
    clean_env.setenv("NO_PROXY", no_proxy)
    before = len(forward_proxy.requests)
    requests.get(f"{opa_url}/health", timeout=5)
    engine = OPAServer(opa_url)
    sync, async_ = both(engine)
    assert sync.allow and async_.allow
    assert through(forward_proxy, before) == [], "requests and the engine both went direct"
    engine.close()


def test_a_proxy_for_another_scheme_is_not_used(
    clean_env: pytest.MonkeyPatch, forward_proxy: FaultProxy, opa_url: str
) -> None:
    clean_env.setenv("HTTPS_PROXY", forward_proxy.url)  # OPA is plain http here
    before = len(forward_proxy.requests)
    engine = OPAServer(opa_url)
    assert engine.decide(READ).allow
    assert through(forward_proxy, before) == []
    engine.close()


def test_an_unreachable_proxy_fails_closed(clean_env: pytest.MonkeyPatch, opa_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    clean_env.setenv("HTTP_PROXY", dead)
    engine = OPAServer(opa_url, timeout=0.5, verify_policy=False)
    for decision in both(engine):
        assert not decision.allow
        assert decision.error == ErrorType.UNREACHABLE
        assert decision.reasons == ("policy engine failed: the proxy to OPA failed",)
    engine.close()


# -- redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["pool", "session"])
def test_a_redirect_is_refused_and_never_followed(opa_url: str, stack: str) -> None:
    """A 307 keeps the method and body: following it would send the policy input (the
    call's arguments, the user) wherever the reply points."""
    with FaultProxy(opa_url) as elsewhere, FaultProxy(opa_url) as redirecting:
        redirecting.set("redirect", redirect_to=elsewhere.url)
        options: dict[str, Any] = {"session": requests.Session()} if stack == "session" else {}
        engine = OPAServer(redirecting.url, verify_policy=False, **options)
        for decision in both(engine):
            assert not decision.allow
            assert decision.error == ErrorType.REDIRECT
            assert decision.reasons == (
                "policy engine failed: OPA answered with a redirect (HTTP 307), "
                "which is not followed",
            )
        assert elsewhere.requests == [], "the redirect was followed"
        engine.close()


# -- the connection cap --------------------------------------------------------------------


def test_max_connections_caps_a_session_too(opa_url: str) -> None:
    import threading

    with FaultProxy(opa_url) as proxy:
        proxy.set("delay", delay=0.05)
        engine = OPAServer(proxy.url, max_connections=4, session=requests.Session())
        before = proxy.connections
        barrier = threading.Barrier(32)
        allowed: list[bool] = []

        def decide() -> None:
            barrier.wait()
            allowed.append(engine.decide(READ).allow)

        threads = [threading.Thread(target=decide) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        engine.close()
        assert allowed == [True] * 32
        assert proxy.connections - before <= 4


# -- a user's session, over a UNIX socket --------------------------------------------------


class UnixConnection(urllib3.connection.HTTPConnection):
    def __init__(self, *args: Any, socket_path: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if isinstance(self.timeout, (int, float)):
            sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        return sock


class UnixPool(urllib3.HTTPConnectionPool):
    ConnectionCls = UnixConnection  # type: ignore[assignment]


class UnixAdapter(HTTPAdapter):
    """Every URL mounted on this adapter goes to one UNIX socket (what requests-unixsocket
    and similar adapters do), and each request it sends is counted."""

    def __init__(self, socket_path: str) -> None:
        super().__init__()
        self.pool = UnixPool("localhost", maxsize=8, socket_path=socket_path)
        self.sent: list[str] = []

    def get_connection_with_tls_context(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self.pool

    def get_connection(self, url: Any, proxies: Any = None) -> Any:
        return self.pool

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(f"{request.method} {request.path_url}")
        return super().send(request, *args, **kwargs)

    def close(self) -> None:
        self.pool.close()


@pytest.fixture
def unix_opa(tmp_path: Path) -> Iterator[str]:
    """A real OPA serving on a UNIX socket only."""
    path = tmp_path / "opa.sock"
    process = subprocess.Popen(
        [opa_binary(), "run", "--server", "--addr", f"unix://{path}", str(POLICIES)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert path.exists(), "opa did not open its socket"
        yield str(path)
    finally:
        stop_process(process)


def test_a_users_session_carries_sync_and_async_requests(unix_opa: str) -> None:
    adapter = UnixAdapter(unix_opa)
    session = requests.Session()
    session.mount("http://opa.sock/", adapter)
    engine = OPAServer("http://opa.sock", session=session)
    assert engine.health()
    before = len(adapter.sent)
    sync, async_ = both(engine)
    many = engine.decide_many([READ] * 3)
    amany = asyncio.run(engine.adecide_many([READ] * 3))
    assert sync.allow and async_.allow
    assert all(d.allow for d in [*many, *amany])
    decisions = [s for s in adapter.sent[before:] if "/v1/data/agent/authz/decision" in s]
    assert len(decisions) == 8, adapter.sent  # every decision, async ones too, took the session
    engine.close()
    assert engine.decide(READ).allow, "close() leaves a user's session open"


def test_tls_options_with_a_session_raise_at_construction(opa_url: str) -> None:
    with pytest.raises(ValueError, match="verify= and cert="):
        OPAServer(opa_url, session=requests.Session(), verify=False)
    with pytest.raises(ValueError, match="verify= and cert="):
        OPAServer(opa_url, session=requests.Session(), cert="client.pem")
