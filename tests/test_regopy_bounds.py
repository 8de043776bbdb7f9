"""The regopy fallback's evaluations are bounded: one past its deadline is killed with its
process, one that needs more memory than the cap fails; either way the decision fails
closed, nothing keeps running, and the next decision works. The runaway policies here
would take about a minute, or a few hundred MB, if nothing stopped them."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from langchain_opa_guard import EmbeddedPolicy, ErrorType
from langchain_opa_guard.engines.regopy.evaluator import ISOLATED

pytestmark = pytest.mark.skipif(not ISOLATED, reason="interpreters run in process here")

# n = 3000: nine million iterations (about a minute for regopy), memory flat.
SPIN = (
    "package agent.authz\n\n"
    'decision := {"allow": true, "reasons": [sprintf("%d", [count({1 |\n'
    "\tsome i in numbers.range(1, input.n)\n"
    "\tsome j in numbers.range(1, input.n)\n"
    "\ti + j < 0\n"
    "})])]}\n"
)
# n = 300000: about 270 MB for regopy, uncapped.
GROW = (
    "package agent.authz\n\n"
    'decision := {"allow": true, "reasons": [sprintf("%d", '
    '[count(sprintf("%v", [numbers.range(1, input.n)]))])]}\n'
)


def _engine(tmp_path: Path, source: str, **options: object) -> EmbeddedPolicy:
    root = tmp_path / "p"
    root.mkdir()
    (root / "policy.rego").write_text(source)
    return EmbeddedPolicy(root, backend="regopy", max_instances=1, **options)  # type: ignore[arg-type]


def _pids(engine: EmbeddedPolicy) -> list[int]:
    return [worker.pid for _, worker in engine._state.evaluator.pool._idle]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _decide_when_ready(engine: EmbeddedPolicy, document: dict[str, int]) -> object:
    """The replacement process loads the policy first: retry its timeouts a while."""
    limit = time.monotonic() + 30
    while True:
        decision = engine.decide(document)
        if decision.error != ErrorType.TIMEOUT or time.monotonic() > limit:
            return decision
        time.sleep(0.1)


def test_an_evaluation_past_its_deadline_is_killed(tmp_path: Path) -> None:
    engine = _engine(tmp_path, SPIN, timeout=0.5, memory_limit=256 << 20)
    assert engine.decide({"n": 3}).reasons == ("0",)
    [pid] = _pids(engine)
    started = time.monotonic()
    decision = engine.decide({"n": 3000})
    assert time.monotonic() - started < 2
    assert (decision.allow, decision.error) == (False, ErrorType.TIMEOUT)
    assert _gone(pid)  # not running on in the background
    after = _decide_when_ready(engine, {"n": 3})
    assert after.reasons == ("0",)  # type: ignore[attr-defined]
    assert engine._state.evaluator.pool.created == 1
    engine.close()


def test_an_async_decision_past_its_deadline_is_killed(tmp_path: Path) -> None:
    engine = _engine(tmp_path, SPIN, timeout=0.5, memory_limit=256 << 20)
    [pid] = _pids(engine)
    decision = asyncio.run(engine.adecide({"n": 3000}))
    assert (decision.allow, decision.error) == (False, ErrorType.TIMEOUT)
    limit = time.monotonic() + 3  # the worker thread kills it at the same deadline
    while not _gone(pid) and time.monotonic() < limit:
        time.sleep(0.05)
    assert _gone(pid)
    engine.close()


def test_an_evaluation_over_the_memory_cap_fails_closed(tmp_path: Path) -> None:
    engine = _engine(tmp_path, GROW, timeout=20, memory_limit=16 << 20)
    assert engine.decide({"n": 3}).reasons == ("9",)
    [pid] = _pids(engine)
    started = time.monotonic()
    decision = engine.decide({"n": 300_000})
    assert time.monotonic() - started < 10  # stopped by the cap, not the deadline
    assert (decision.allow, decision.error) == (False, ErrorType.ENGINE)
    assert _gone(pid)
    assert _decide_when_ready(engine, {"n": 3}).reasons == ("9",)  # type: ignore[attr-defined]
    engine.close()


def test_close_ends_the_processes(tmp_path: Path) -> None:
    engine = _engine(tmp_path, SPIN, timeout=5)
    [pid] = _pids(engine)
    engine.close()
    assert _gone(pid)
    assert engine.decide({"n": 3}).error == ErrorType.ENGINE


def test_a_reload_ends_the_old_processes(tmp_path: Path) -> None:
    engine = _engine(tmp_path, SPIN, timeout=5)
    [pid] = _pids(engine)
    engine.reload()
    assert _gone(pid)
    assert engine.decide({"n": 3}).reasons == ("0",)
    engine.close()
