"""Fixtures: a real OPA server per test session, both engines, the customer-database agent."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from opa_process import ROOT, OPAProcess, opa_binary

from langchain_opa_guard import EmbeddedPolicy, OPAServer, PolicyEngine

# The embedded engine compiles Rego with the same OPA the tests run as a server (without
# one it would fall back to regopy, which the fallback's own tests choose explicitly).
os.environ.setdefault("OPA_BIN", opa_binary())

POLICIES = ROOT / "policies"
SERVER_POLICIES = ROOT / "server-policies"
TEST_POLICIES = ROOT / "tests" / "policies"


@pytest.fixture(scope="session")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAProcess]:
    """A real OPA server with the project's policies, its server-side batch rule, and the
    tests' own policies loaded."""
    log = tmp_path_factory.mktemp("opa") / "opa.log"
    with OPAProcess([POLICIES, SERVER_POLICIES, TEST_POLICIES], log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def opa_url(opa: OPAProcess) -> str:
    return opa.url


@pytest.fixture
def opa_server(opa_url: str) -> Iterator[OPAServer]:
    client = OPAServer(opa_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def embedded() -> EmbeddedPolicy:
    return EmbeddedPolicy(POLICIES)


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest) -> PolicyEngine:
    """Each test that takes ``engine`` runs on both engines."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded")  # type: ignore[no-any-return]
    return request.getfixturevalue("opa_server")  # type: ignore[no-any-return]
