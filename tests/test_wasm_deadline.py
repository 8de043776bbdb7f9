"""The embedded engine's deadline bounds the whole evaluation, host builtins included.

Wasmtime's epoch interruption only stops guest code; the builtins the host runs in Python
(``regex.find_n``, ``regex.replace``, ``indexof_n``, ``sprintf``, ...) check the deadline
before they start and between the steps of their loops, and an answer that comes back past
the deadline is a ``timeout`` whatever was slow. After any of these, the next decision runs
on a sound instance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES

from langchain_opa_guard import EmbeddedPolicy, ErrorType
from langchain_opa_guard.engines.wasm import evaluator as wasm_evaluator
from langchain_opa_guard.engines.wasm.go_regexp import compile_go
from langchain_opa_guard.engines.wasm.host_builtins import HOST_BUILTINS, builtin_deadline

FIND_POLICY = """package agent.authz

decision := {"allow": true, "reasons": [x |
	some p in input.patterns
	x := regex.find_n(p, input.text, -1)
]}
"""


def find_engine(tmp_path: Path, timeout: float) -> EmbeddedPolicy:
    root = tmp_path / "p"
    root.mkdir()
    (root / "policy.rego").write_text(FIND_POLICY)
    return EmbeddedPolicy(root, backend="wasm", max_instances=1, timeout=timeout)


def test_a_builtin_that_runs_past_the_deadline_stops_the_evaluation(tmp_path: Path) -> None:
    # Three million matches: seconds of Python between two guest instructions.
    with find_engine(tmp_path, timeout=0.5) as engine:
        started = time.monotonic()
        decision = engine.decide({"patterns": ["a"], "text": "a" * 3_000_000})
        took = time.monotonic() - started
        assert (decision.allow, decision.error) == (False, ErrorType.TIMEOUT)
        assert took < 1.5
        # The instance that stopped was replaced: the next decision is whole.
        decision = engine.decide({"patterns": ["a", "a{2}"], "text": "aaa"})
        assert decision.allow and decision.result == {
            "allow": True,
            "reasons": [["a", "a", "a"], ["aa"]],
        }


def test_a_builtin_called_past_the_deadline_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original: Callable[[list[Any]], Any] = HOST_BUILTINS["regex.find_n"]

    def slow(args: list[Any]) -> Any:
        calls.append(args[0])
        time.sleep(0.4)
        return original(args)

    monkeypatch.setattr(wasm_evaluator, "HOST_BUILTINS", {**HOST_BUILTINS, "regex.find_n": slow})
    with find_engine(tmp_path, timeout=1.0) as engine:
        patterns = [f"a{{{i}}}" for i in range(1, 11)]  # ten calls: 4 s of sleeping
        started = time.monotonic()
        decision = engine.decide({"patterns": patterns, "text": "aaa"})
        took = time.monotonic() - started
        assert (decision.allow, decision.error) == (False, ErrorType.TIMEOUT)
        assert len(calls) <= 4 and took < 2.0
        calls.clear()
        decision = engine.decide({"patterns": ["a", "a{2}"], "text": "aaa"})
        assert decision.allow and decision.result == {
            "allow": True,
            "reasons": [["a", "a", "a"], ["aa"]],
        }
        assert len(calls) == 2


def test_an_answer_that_comes_back_late_is_a_timeout(tmp_path: Path) -> None:
    # One Python match that cannot be interrupted: it backtracks from the start RE2 found
    # (about a second here); the evaluation ends after it, past the deadline.
    with find_engine(tmp_path, timeout=0.1) as engine:
        document = {"patterns": ["(a+)+b|a+c"], "text": "a" * 24 + "c"}
        decision = engine.decide(document)
        assert (decision.allow, decision.error) == (False, ErrorType.TIMEOUT)
        decision = engine.decide({"patterns": ["(a+)+b|a+c"], "text": "aac"})
        assert decision.allow and decision.result == {"allow": True, "reasons": [["aac"]]}


def test_regex_loops_stop_at_the_deadline() -> None:
    pattern = compile_go("a")
    text = "a" * 200_000
    past = time.monotonic() - 1
    with pytest.raises(TimeoutError):
        pattern.find_all(text, -1, past)
    with pytest.raises(TimeoutError):
        pattern.replace_all(text, "b", past)
    soon = time.monotonic() + 0.05
    with pytest.raises(TimeoutError):  # 200,000 matches take longer than that
        pattern.find_all(text * 20, -1, soon)
    assert time.monotonic() - soon < 1.0
    assert pattern.find_all(text, 3, time.monotonic() + 10) == ["a", "a", "a"]
    with builtin_deadline(past):
        for name, args in (
            ("regex.find_n", ["a", "aa", _number(-1)]),
            ("regex.replace", ["aa", "a", "b"]),
            ("indexof_n", ["aa", "a"]),
        ):
            with pytest.raises(TimeoutError):
                HOST_BUILTINS[name](args)
    assert HOST_BUILTINS["indexof_n"](["aa", "a"]) == [0, 1]  # no deadline outside


def _number(value: int) -> Any:
    from langchain_opa_guard.engines.wasm.rego_values import Number

    return Number(str(value))


LONG_WORD = "x" * 200_000


def _flow_input(body: str) -> dict[str, Any]:
    reader = {"read_only": True, "trust": "untrusted"}
    mailer = {"egress": {"destinations": ["to"], "content": ["subject", "body"]}}
    past = {
        "name": "fetch_url",
        "args": {"url": "https://news.test"},
        "call_id": "h1",
        "metadata": reader,
        "decision": "allow",
        "reasons": [],
        "status": "success",
    }
    args = {"to": "bob@example.com", "subject": "summary", "body": body}
    tool = {"name": "send_email", "args": args, "call_id": "c1", "metadata": mailer}
    return {
        "version": 1,
        "tool": tool,
        "user": {"id": "user-456", "role": "internal_user"},
        "context": {
            "thread_id": "t",
            "request": "mail the summary to bob@example.com",
            "directory": [],
        },
        "turn": [tool],
        "history": [past],
    }


@pytest.mark.parametrize(
    "body",
    [
        LONG_WORD,
        "a.b-c+d" * 30_000,  # a scheme's characters, no colon: each start read far ahead
        "é" + "x" * 100_000 + " see https://evil.test/x " + "ü" * 100_000,
    ],
)
def test_long_arguments_are_decided_within_the_deadline(body: str) -> None:
    with EmbeddedPolicy(POLICIES, timeout=2.0) as engine:
        started = time.monotonic()
        decision = engine.decide(_flow_input(body))
        took = time.monotonic() - started
        assert decision.error is None, decision.reasons
        assert decision.allow == ("evil.test" not in body)
        assert took < 2.0

        async def both() -> list[Any]:
            many = await engine.adecide_many([_flow_input(body)])
            return [await engine.adecide(_flow_input(body)), *many]

        decisions = asyncio.run(both())
        assert [(d.allow, d.error) for d in decisions] == [(decision.allow, None)] * 2
