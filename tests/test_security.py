"""OPA behind TLS with token (and client-certificate) authentication, and what never leaks.

The certificates are made per test session with the ``openssl`` command-line tool: a CA, a
server certificate for ``127.0.0.1`` (an IP subject alternative name), a client certificate,
and a second CA that signed nothing OPA serves. Every client here verifies the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from opa_process import OPAProcess
from test_guard_node import (
    ADMIN,
    INTERNAL,
    assert_every_call_answered_once,
    check_mixed_result,
    mixed_turn_model,
)
from test_tracing import Recorder

from langchain_opa_guard import Decision, ErrorType, OPAServer
from langchain_opa_guard.demo import build_agent, customer_db_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call
from langchain_opa_guard.tracing import attributes as A

TOKEN = "tok-9f1c2e7d5b3a4c6e8f0a1b2c3d4e5f60"
WRONG_TOKEN = "tok-wrong-0000000000000000000000000"
CLIENT_CN = "guard-client"
SECRET_ID = "CUST-SECRET-7731"
"""An argument value that must stay out of traces and logs unless content capture is on."""

READ = {
    "version": 1,
    "tool": {
        "name": "get_customer_details",
        "args": {"customer_id": "CUST-001", "fields": {"name": True}},
        "call_id": "probe",
        "metadata": {"toolkit": "CustomerDBTool"},
    },
    "user": ADMIN,
    "context": {},
    "turn": [],
    "history": [],
}

# -- certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class PKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name} test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def make_leaf(directory: Path, name: str, cn: str, extensions: str) -> None:
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-sha256",
        "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "other")
    make_leaf(
        directory,
        "server",
        "127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    make_leaf(
        directory,
        "client",
        CLIENT_CN,
        "extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n",
    )
    return PKI(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other.pem",
    )


# -- OPA over TLS ------------------------------------------------------------------------


class TLSOPAProcess(OPAProcess):
    """``OPAProcess`` over HTTPS whose readiness probe verifies the server like any client."""

    def __init__(self, paths: list[Path], pki: PKI, extra_args: list[str], log: Path) -> None:
        tls = [
            "--tls-cert-file",
            str(pki.server_cert),
            "--tls-private-key-file",
            str(pki.server_key),
        ]
        probe = ssl.create_default_context(cafile=str(pki.ca))
        probe.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        super().__init__(
            paths,
            extra_args=[*tls, *extra_args],
            log_path=log,
            scheme="https",
            probe_verify=probe,
        )
        self.pki = pki


AUTHZ_TOKEN = f"""package system.authz

default allow := false

allow if input.identity == "{TOKEN}"

allow if {{
	input.method == "GET"
	input.path == ["health"]
}}
"""

AUTHZ_CLIENT_CERT = f"""package system.authz

default allow := false

allow if input.identity == "CN={CLIENT_CN}"

allow if {{
	input.method == "GET"
	input.path == ["health"]
}}
"""


@pytest.fixture(scope="module")
def token_opa(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """OPA on HTTPS with ``--authentication=token --authorization=basic``; its URL."""
    directory = tmp_path_factory.mktemp("authz-token")
    (directory / "authz.rego").write_text(AUTHZ_TOKEN)
    args = ["--authentication=token", "--authorization=basic"]
    with TLSOPAProcess([POLICIES, directory], pki, args, directory / "opa.log") as server:
        yield server.url


@pytest.fixture(scope="module")
def cert_opa(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """OPA on HTTPS that authenticates clients by certificate (mutual TLS); its URL."""
    directory = tmp_path_factory.mktemp("authz-cert")
    (directory / "authz.rego").write_text(AUTHZ_CLIENT_CERT)
    args = [
        "--authentication=tls",
        "--authorization=basic",
        "--tls-ca-cert-file",
        str(pki.ca),
    ]
    with TLSOPAProcess([POLICIES, directory], pki, args, directory / "opa.log") as server:
        yield server.url


def both_sides(client: OPAServer, document: dict[str, Any] = READ) -> list[Decision]:
    return [client.decide(document), asyncio.run(client.adecide(document))]


# -- authentication ----------------------------------------------------------------------


def test_the_right_token_over_verified_tls_is_allowed(token_opa: str, pki: PKI) -> None:
    client = OPAServer(token_opa, token=TOKEN, verify=str(pki.ca))
    for decision in both_sides(client):
        assert decision.allow and decision.error is None
    tools, db = customer_db_tools()
    graph = build_agent(client, mixed_turn_model(), tools)
    check_mixed_result(graph.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL}), db)
    db.executed.clear()
    result = asyncio.run(graph.ainvoke({"messages": [("user", "go")]}, context={"user": INTERNAL}))
    check_mixed_result(result, db)
    client.close()


@pytest.mark.parametrize("token", [WRONG_TOKEN, None], ids=["wrong-token", "no-token"])
def test_a_refused_client_is_denied_as_unauthorized(
    token_opa: str, pki: PKI, token: str | None
) -> None:
    client = OPAServer(token_opa, token=token, verify=str(pki.ca))
    for decision in both_sides(client):
        assert not decision.allow
        assert decision.error == ErrorType.UNAUTHORIZED
        assert decision.reasons == (
            "policy engine failed: OPA refused the client's credentials (HTTP 401)",
        )
    tools, db = customer_db_tools()
    graph = build_agent(client, mixed_turn_model(), tools)
    for run in (
        lambda: graph.invoke({"messages": [("user", "go")]}, context={"user": ADMIN}),
        lambda: asyncio.run(graph.ainvoke({"messages": [("user", "go")]}, context={"user": ADMIN})),
    ):
        result = run()
        assert_every_call_answered_once(result["messages"])
        answers = [m for m in result["messages"] if isinstance(m, ToolMessage)]
        assert len(answers) == 3
        assert all(a.artifact["opa_guard"]["error"] == ErrorType.UNAUTHORIZED for a in answers)
    assert db.executed == []


@pytest.mark.parametrize("case", ["other-ca", "system-ca", "wrong-host"])
def test_a_server_that_fails_verification_is_denied_not_raised(
    token_opa: str, pki: PKI, case: str
) -> None:
    """A CA that did not sign OPA's certificate, or a name the certificate does not hold."""
    if case == "other-ca":
        client = OPAServer(token_opa, token=TOKEN, verify=str(pki.other_ca))
    elif case == "system-ca":
        client = OPAServer(token_opa, token=TOKEN)  # verify=True: the system's CAs
    else:
        port = token_opa.rsplit(":", 1)[1]
        client = OPAServer(f"https://localhost:{port}", token=TOKEN, verify=str(pki.ca))
    decisions = both_sides(client)
    for decision in decisions:
        assert not decision.allow
        assert decision.error == ErrorType.UNREACHABLE, decision
        assert decision.reasons[0].startswith("policy engine failed: ")
    assert "TLS" in decisions[0].reasons[0]  # the sync side names the handshake
    tools, db = customer_db_tools()
    graph = build_agent(client, mixed_turn_model(), tools)
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": ADMIN})
    assert_every_call_answered_once(result["messages"])
    assert db.executed == []


def test_a_client_certificate_authenticates_over_mutual_tls(cert_opa: str, pki: PKI) -> None:
    with_cert = OPAServer(
        cert_opa, verify=str(pki.ca), cert=(str(pki.client_cert), str(pki.client_key))
    )
    for decision in both_sides(with_cert):
        assert decision.allow and decision.error is None
    without = OPAServer(cert_opa, verify=str(pki.ca))
    for decision in both_sides(without):
        assert not decision.allow
        assert decision.error in (ErrorType.UNAUTHORIZED, ErrorType.UNREACHABLE)
    with_cert.close()
    without.close()


@pytest.mark.parametrize("transport", ["pool", "session"])
def test_credentials_in_the_url_do_not_replace_the_token(
    token_opa: str, pki: PKI, transport: str
) -> None:
    """Sync and async send the configured bearer token, on either HTTP stack."""
    port = token_opa.rsplit(":", 1)[1]
    options: dict[str, Any] = {"verify": str(pki.ca)}
    if transport == "session":
        session = requests.Session()
        session.verify = str(pki.ca)  # a corporate CA, set where requests users set it
        options = {"session": session}
    client = OPAServer(f"https://ops:hunter2@127.0.0.1:{port}", token=TOKEN, **options)
    sync, async_ = both_sides(client)
    assert sync.allow, sync
    assert async_.allow, async_


def test_the_engine_repr_does_not_show_the_url_password() -> None:
    """``repr(engine)`` ends up in logs, tracebacks and notebooks."""
    client = OPAServer("https://ops:hunter2@opa.internal:8181", verify_policy=False)
    assert "hunter2" not in repr(client)
    assert "opa.internal:8181" in repr(client)


# -- nothing secret in traces, logs or reasons ------------------------------------------


def secret_turns() -> ScriptedChatModel:
    """An allowed read, a denied PII read and a denied update, all on a secret customer id."""
    return ScriptedChatModel(
        script=[
            AIMessage(
                "",
                tool_calls=[
                    tool_call(
                        "get_customer_details",
                        {"customer_id": SECRET_ID, "fields": {"name": True}},
                        "s-read",
                    ),
                    tool_call(
                        "get_customer_details",
                        {"customer_id": SECRET_ID, "fields": {"email": True}},
                        "s-pii",
                    ),
                    tool_call(
                        "update_customer_status",
                        {"customer_id": SECRET_ID, "new_status": "active"},
                        "s-upd",
                    ),
                ],
            ),
            "done",
        ]
    )


def run_everything(token_opa: str, pki: PKI, recorder: Recorder) -> list[str]:
    """Allowed, denied, refused and unverifiable runs; every reason the guard produced."""
    reasons: list[str] = []
    config = {"callbacks": [recorder.handler], "configurable": {"thread_id": "sec-1"}}
    inputs = {"messages": [("user", "go")]}
    clients = [
        OPAServer(token_opa, token=TOKEN, verify=str(pki.ca)),
        OPAServer(token_opa, token=WRONG_TOKEN, verify=str(pki.ca)),
        OPAServer(token_opa, token=TOKEN, verify=str(pki.other_ca)),
    ]
    ran = []
    for client in clients:
        tools, db = customer_db_tools()
        graph = build_agent(client, secret_turns(), tools)
        for result in (
            graph.invoke(inputs, config, context={"user": INTERNAL}),
            asyncio.run(graph.ainvoke(inputs, config, context={"user": INTERNAL})),
        ):
            for message in result["messages"]:
                if isinstance(message, ToolMessage) and isinstance(message.artifact, dict):
                    record = message.artifact.get("opa_guard")
                    if record:
                        reasons.extend(record["reasons"])
                        reasons.append(str(message.content))
        secret_read = dict(READ, tool={**READ["tool"], "args": {"customer_id": SECRET_ID}})
        for decision in both_sides(client, secret_read):
            reasons.extend(decision.reasons)
        ran.append(len(db.executed))
        client.close()
    assert ran == [2, 0, 0]  # the allowed read ran (sync and async) only with the right token
    return reasons


def span_dump(recorder: Recorder) -> str:
    spans = recorder.spans
    assert spans
    return json.dumps(
        [{"name": s.name, **dict(s.attributes), "status": s.status.description} for s in spans],
        default=str,
    )


def log_dump(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(repr(record.args))
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


def test_token_and_arguments_stay_out_of_spans_logs_and_reasons(
    token_opa: str, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.DEBUG):
        reasons = run_everything(token_opa, pki, recorder)
    spans, logs = span_dump(recorder), log_dump(caplog)
    recorder.provider.shutdown()
    assert recorder.by_name("execute_tool ")  # something ran, so something could leak
    assert logs  # DEBUG logging really was captured
    assert reasons
    for secret in (TOKEN, WRONG_TOKEN, f"Bearer {TOKEN[:8]}", SECRET_ID):
        assert secret not in spans, secret
        assert secret not in logs, secret
        assert not [r for r in reasons if secret in r], secret


def test_content_capture_records_arguments_but_never_the_token(
    token_opa: str, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(capture_content=True)
    with caplog.at_level(logging.DEBUG):
        run_everything(token_opa, pki, recorder)
    spans, logs = span_dump(recorder), log_dump(caplog)
    executed = recorder.by_name("execute_tool ")
    assert executed
    assert all(SECRET_ID in str(s.attributes[A.GEN_AI_TOOL_CALL_ARGUMENTS]) for s in executed)
    recorder.provider.shutdown()
    for secret in (TOKEN, WRONG_TOKEN):
        assert secret not in spans, secret
        assert secret not in logs, secret
