"""The wasm engine itself: sources, the compile cache, builtins, deadlines, memory caps,
the bounded pool, fork safety, reloads and the regopy fallback."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import tarfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from conftest import POLICIES
from opa_process import opa_binary

from langchain_opa_guard import EmbeddedPolicy, ErrorType
from langchain_opa_guard.engines.wasm.bundles import _MEMORY, SHIPPED_BUNDLE
from langchain_opa_guard.engines.wasm.host_builtins import UnsupportedBuiltinError
from langchain_opa_guard.engines.wasm.runtime import (
    WasmModule,
    data_segments_end,
    fast_path_available,
)

GUEST = {"id": "user-789", "role": "guest"}
ADMIN = {"id": "user-123", "role": "admin"}


def call_input(name: str, user: dict[str, Any], call_id: str = "c1") -> dict[str, Any]:
    call = {
        "name": name,
        "args": {"customer_id": "CUST-1", "fields": {"name": True}},
        "call_id": call_id,
        "metadata": {"toolkit": "CustomerDBTool"},
    }
    return {"version": 1, "tool": call, "user": user, "context": {}, "turn": [call], "history": []}


SLOW_POLICY = """package agent.authz

decision := {"allow": count(big) > 0, "reasons": []}

big := [x | some i in numbers.range(1, input.n); x := sprintf("%d", [i])]
"""

LOOP_POLICY = """package agent.authz

decision := {"allow": true, "reasons": [replace("abc", input.pattern, "x")]}
"""


def write_policy(root: Path, source: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "policy.rego").write_text(source)
    return root


@pytest.fixture
def no_opa(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No opa binary anywhere: neither OPA_BIN nor PATH."""
    monkeypatch.delenv("OPA_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


def test_the_fast_call_path_is_in_use() -> None:
    """Pins the wasmtime-py private API the hot call uses (see wasm_runtime)."""
    assert fast_path_available()


def test_shipped_policies_run_on_wasm_with_only_python(no_opa: None) -> None:
    engine = EmbeddedPolicy(POLICIES)
    assert engine.backend == "wasm" and engine.batches
    assert not engine.decide(call_input("delete_customer", GUEST)).allow
    assert engine.decide(call_input("get_customer_details", ADMIN)).allow
    bundle = EmbeddedPolicy(SHIPPED_BUNDLE)
    assert bundle.backend == "wasm" and bundle.revision == engine.revision


def test_other_rego_without_opa_falls_back_to_regopy_with_one_warning(
    no_opa: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    (copy / "agent" / "extra.rego").write_text("package agent.authz\n\nunused := 1\n")
    with caplog.at_level(logging.WARNING, logger="langchain_opa_guard.engines.embedded"):
        engine = EmbeddedPolicy(copy)
        engine.reload()
        engine.decide(call_input("delete_customer", GUEST))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "regopy" in warnings[0].getMessage() and "sprintf" in warnings[0].getMessage()
    assert engine.backend == "regopy"
    assert not engine.decide(call_input("delete_customer", GUEST)).allow
    with pytest.raises(ValueError, match="needs the opa binary"):
        EmbeddedPolicy(copy, backend="wasm")


def test_rego_is_compiled_once_per_change(tmp_path: Path) -> None:
    """A counting wrapper around opa shows one `opa build` for two engines and a
    rebuild only after the policy changed."""
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "opa"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec {opa_binary()} "$@"\n')
    wrapper.chmod(0o755)
    policy = write_policy(tmp_path / "p", LOOP_POLICY.replace("input.pattern", '"b"'))
    cache = tmp_path / "cache"
    _MEMORY.clear()
    EmbeddedPolicy(policy, opa=wrapper, cache_dir=cache)
    _MEMORY.clear()
    engine = EmbeddedPolicy(policy, opa=wrapper, cache_dir=cache)
    assert log.read_text().split().count("build") == 1
    assert len(list(cache.glob("*.tar.gz"))) == 1
    (policy / "policy.rego").write_text(LOOP_POLICY.replace("input.pattern", '"c"'))
    engine.reload()
    assert log.read_text().split().count("build") == 2
    assert engine.decide({}).reasons == ("abx",) or engine.decide({}).allow


def test_a_wasm_bundle_with_and_without_a_revision(tmp_path: Path) -> None:
    for revision in ("rev-7", ""):
        bundle = tmp_path / f"b{revision}.tar.gz"
        args = [opa_binary(), "build", "-t", "wasm", "-e", "agent/authz/decision"]
        args += ["--ignore", "*_test.rego", "-o", str(bundle), str(POLICIES)]
        if revision:
            args += ["--revision", revision]
        subprocess.run(args, check=True, capture_output=True)
        engine = EmbeddedPolicy(bundle)
        assert engine.backend == "wasm" and not engine.batches
        assert engine.revision == (revision or engine.revision) and len(engine.revision) >= 5
        turn = [call_input("delete_customer", GUEST, "a"), call_input("fetch_url", GUEST, "b")]
        assert [d.allow for d in engine.decide_many(turn)] == [False, True]


def test_host_builtins_are_refused_at_load_with_their_lines(tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "p",
        "package agent.authz\n\n"
        'decision := {"allow": true, "reasons": []} if {\n'
        "\tnet.lookup_ip_addr(input.host)\n"
        '\thttp.send({"method": "get", "url": input.url}).status_code == 200\n'
        "}\n",
    )
    with pytest.raises(UnsupportedBuiltinError) as info:
        EmbeddedPolicy(policy, backend="wasm")
    message = str(info.value)
    assert "http.send (policy.rego:5)" in message
    assert "net.lookup_ip_addr (policy.rego:4)" in message


def test_a_deadline_fails_closed_and_the_next_decision_is_fresh(tmp_path: Path) -> None:
    engine = EmbeddedPolicy(
        write_policy(tmp_path / "p", SLOW_POLICY),
        timeout=0.2,
        max_instances=1,
        memory_limit=1 << 30,
    )
    assert engine.decide({"n": 10}).allow
    started = time.monotonic()
    slow = engine.decide({"n": 10**8})
    elapsed = time.monotonic() - started
    assert (slow.allow, slow.error) == (False, ErrorType.TIMEOUT) and elapsed < 0.6
    assert engine.decide({"n": 10}).allow  # a fresh instance
    assert engine._state.evaluator.pool.created == 1


def test_opa_wasm_replace_with_an_empty_pattern_times_out_closed(tmp_path: Path) -> None:
    """A known gap of OPA's wasm compiler (its replace() loops on an empty pattern):
    the deadline turns it into a fail-closed timeout."""
    engine = EmbeddedPolicy(write_policy(tmp_path / "p", LOOP_POLICY), timeout=0.2)
    assert engine.decide({"pattern": "b"}).reasons == ("axc",)
    decision = engine.decide({"pattern": ""})
    assert (decision.allow, decision.error) == (False, ErrorType.TIMEOUT)
    assert engine.decide({"pattern": "c"}).reasons == ("abx",)


def test_the_memory_cap_fails_closed(tmp_path: Path) -> None:
    engine = EmbeddedPolicy(
        write_policy(tmp_path / "p", SLOW_POLICY), timeout=10, memory_limit=8 << 20
    )
    decision = engine.decide({"n": 2_000_000})
    assert (decision.allow, decision.error) == (False, ErrorType.ENGINE)
    assert engine.decide({"n": 10}).allow


def test_an_evaluation_error_fails_closed(tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "p",
        'package agent.authz\n\ndecision := {"allow": true, "reasons": []} if input.a\n\n'
        'decision := {"allow": false, "reasons": []} if input.b\n',
    )
    engine = EmbeddedPolicy(policy)
    conflict = engine.decide({"a": True, "b": True})
    assert (conflict.allow, conflict.error) == (False, ErrorType.ENGINE)
    assert engine.decide({"a": True}).allow


def test_the_memory_holds_every_data_segment() -> None:
    """OPA may declare its imported memory smaller than its data segments need (this pack's
    module once declared 2 pages, 131,072 bytes, for data ending at 131,253): the engine
    gives the memory as many pages as the data segments fill."""
    segments = wasmtime.wat2wasm(
        '(module (memory 1) (data (i32.const 8) "abc") (data (i32.const 70000) "xy"))'
    )
    assert data_segments_end(bytes(segments)) == 70002
    with tarfile.open(SHIPPED_BUNDLE) as bundle:
        member = bundle.extractfile("/policy.wasm")
        assert member is not None
        wasm = member.read()
    module = WasmModule(wasm)
    assert module.memory_pages * 65536 >= data_segments_end(wasm) > 0
    instance = module.instance(b"{}", memory_limit=64 << 20)
    assert instance.memory.size(instance.store) >= module.memory_pages
    instance.close()


def test_a_module_that_cannot_start_is_an_engine_error_not_a_trap() -> None:
    """A module whose start traps (its data does not fit the memory it is given) raises the
    engine's own error, never wasmtime's raw trap."""
    from langchain_opa_guard.decision import EngineError

    with tarfile.open(SHIPPED_BUNDLE) as bundle:
        member = bundle.extractfile("/policy.wasm")
        assert member is not None
        module = WasmModule(member.read())
    module.memory_pages = 0  # as before the engine sized the memory to the data
    with pytest.raises(EngineError, match="could not be started") as caught:
        module.instance(b"{}", memory_limit=64 << 20)
    assert caught.value.error_type == ErrorType.ENGINE
    assert isinstance(caught.value.__cause__, wasmtime.Trap)


def test_64_threads_share_a_bounded_pool() -> None:
    engine = EmbeddedPolicy(POLICIES, max_instances=3)
    pool = engine._state.evaluator.pool
    peak = 0
    barrier = threading.Barrier(64)

    def run(i: int) -> bool:
        nonlocal peak
        barrier.wait()
        user = ADMIN if i % 2 else GUEST
        verdicts = []
        for _ in range(20):
            verdicts.append(engine.decide(call_input("delete_customer", user)).allow)
            peak = max(peak, pool.created)
        return all(v == (user is ADMIN) for v in verdicts)

    with ThreadPoolExecutor(64) as threads:
        assert all(threads.map(run, range(64)))
    assert 1 <= peak <= 3 and pool.created <= 3


def test_timeout_counts_from_submission(tmp_path: Path) -> None:
    """256 concurrent adecide against a stalled policy all end within about the timeout."""
    import asyncio

    engine = EmbeddedPolicy(
        write_policy(tmp_path / "p", SLOW_POLICY),
        timeout=0.3,
        max_instances=2,
        memory_limit=1 << 30,
    )

    async def one() -> tuple[float, Any]:
        started = time.monotonic()
        decision = await engine.adecide({"n": 10**8})
        return time.monotonic() - started, decision

    async def many() -> list[tuple[float, Any]]:
        return await asyncio.gather(*(one() for _ in range(256)))

    results = asyncio.run(many())
    assert all(d.error == ErrorType.TIMEOUT for _, d in results)
    # Queued behind 2 instances, 256 decisions of 0.3 s would take about 38 s; counted
    # from submission, each ends near its own deadline (slack for a loaded machine: far
    # below the 38 s a queue would take).
    assert max(t for t, _ in results) < 5.0, sorted(t for t, _ in results)[-5:]
    engine.close()


def test_reload_swaps_atomically(tmp_path: Path) -> None:
    allow = 'package agent.authz\n\ndecision := {"allow": true, "reasons": []}\n'
    deny = 'package agent.authz\n\ndecision := {"allow": false, "reasons": ["no"]}\n'
    root = write_policy(tmp_path / "p", allow)
    engine = EmbeddedPolicy(root, timeout=60)  # compiles share the cores with deciders
    revisions = {engine.revision: True}
    stop = threading.Event()
    seen: list[tuple[str | None, bool, str | None]] = []

    def decide() -> None:
        while not stop.is_set():
            d = engine.decide({"x": 1})
            seen.append((d.revision, d.allow, d.error))

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(6):
        (root / "policy.rego").write_text((deny if i % 2 == 0 else allow) + f"\nversion := {i}\n")
        engine.reload()
        revisions[engine.revision] = i % 2 == 1
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert len(seen) > 50
    errors = [e for _, _, e in seen if e is not None]
    assert not errors, (len(errors), errors[:3])
    wrong = [(r, a) for r, a, _ in seen if r and revisions[r] != a]
    assert not wrong, (wrong[:5], revisions)


def test_close_and_context_manager() -> None:
    with EmbeddedPolicy(POLICIES) as engine:
        assert engine.decide(call_input("delete_customer", ADMIN)).allow
    decision = engine.decide(call_input("delete_customer", ADMIN))
    assert (decision.allow, decision.error) == (False, ErrorType.ENGINE)
    engine.close()


def test_a_turn_in_one_guest_call_matches_one_by_one() -> None:
    engine = EmbeddedPolicy(POLICIES)
    names = ["get_customer_details", "delete_customer", "send_email", "fetch_url"]
    for user in (ADMIN, GUEST, {"id": "u", "role": "internal_user"}):
        calls = [call_input(n, user, f"id-{i}")["tool"] for i, n in enumerate(names)]
        calls[2]["metadata"] = {"egress": True}
        calls[3]["metadata"] = {"trust": "untrusted"}
        docs = [
            {"version": 1, "tool": c, "user": user, "context": {}, "turn": calls, "history": []}
            for c in calls
        ]
        together = engine.decide_many(docs)
        alone = [engine.decide(d) for d in docs]
        assert [(d.verdict, d.reasons) for d in together] == [(d.verdict, d.reasons) for d in alone]
    # Duplicate call ids cannot be keyed: decided one by one, still correct.
    twins = [call_input("delete_customer", GUEST, "same"), call_input("fetch_url", GUEST, "same")]
    assert [d.allow for d in engine.decide_many(twins)] == [False, True]


def test_a_turn_is_sent_by_position_or_whole_and_both_decide_alike() -> None:
    from langchain_opa_guard.engines.wasm.bundles import BATCH_ENTRYPOINT, TURN_BATCH_ENTRYPOINT

    engine = EmbeddedPolicy(POLICIES)
    assert engine._state.turn_batch == TURN_BATCH_ENTRYPOINT
    assert engine._state.batch == BATCH_ENTRYPOINT
    names = ["get_customer_details", "delete_customer", "fetch_url"]
    calls = [call_input(n, GUEST, f"id-{i}")["tool"] for i, n in enumerate(names)]
    shared = {"version": 1, "user": GUEST, "context": {}, "turn": calls, "history": []}
    by_position = [{**shared, "tool": c} for c in calls]
    # Copies of the calls (a build_input may make them): found in the turn by value.
    by_value = [{**shared, "tool": dict(c)} for c in calls]
    # Calls that are not in the turn at all go whole, through the other entrypoint.
    elsewhere = [{**shared, "turn": [], "tool": c} for c in calls]
    alone = [(d.verdict, d.reasons) for d in (engine.decide(x) for x in by_position)]
    assert [d.verdict for d in engine.decide_many(by_position)] == ["deny", "deny", "allow"]
    for docs in (by_position, by_value, elsewhere):
        assert [(d.verdict, d.reasons) for d in engine.decide_many(docs)] == alone


def test_a_bundle_built_before_the_positional_entrypoint_still_decides_a_turn(
    tmp_path: Path,
) -> None:
    from langchain_opa_guard.engines.policy_sources import load_sources
    from langchain_opa_guard.engines.wasm.bundles import (
        BATCH_ENTRYPOINT,
        BATCH_FILE,
        batch_module,
        build_bundle,
        write_bundle,
    )

    sources = load_sources(POLICIES)
    old_module = batch_module("agent/authz/decision").split("\n\nturn_decisions")[0] + "\n"
    bundle = build_bundle(
        {**sources.modules, BATCH_FILE: old_module},
        ["agent/authz/decision", BATCH_ENTRYPOINT],
        opa=opa_binary(),
        data=sources.data,
    )
    path = tmp_path / "old.tar.gz"
    write_bundle(bundle, path)
    engine = EmbeddedPolicy(path)
    assert engine.batches and engine._state.turn_batch is None
    calls = [call_input(n, GUEST, f"id-{i}")["tool"] for i, n in enumerate(["x", "fetch_url"])]
    docs = [
        {"version": 1, "user": GUEST, "context": {}, "turn": calls, "history": [], "tool": c}
        for c in calls
    ]
    assert [d.allow for d in engine.decide_many(docs)] == [False, True]


def test_a_call_without_a_decision_in_a_batched_turn_is_undefined_alone(tmp_path: Path) -> None:
    # turn_decisions is a list in the order of the calls: a call whose decision is
    # undefined leaves it shorter, and the turn is decided one by one instead (a list
    # read as it comes would give the next call's decision to this one).
    root = write_policy(
        tmp_path / "p",
        "package agent.authz\n\n"
        'decision := {"allow": input.tool.name == "fetch_url", "reasons": []} if '
        'input.tool.name != "gap"\n',
    )
    engine = EmbeddedPolicy(root)
    calls = [
        call_input(n, GUEST, f"id-{i}")["tool"] for i, n in enumerate(["x", "gap", "fetch_url"])
    ]
    docs = [
        {"version": 1, "user": GUEST, "context": {}, "turn": calls, "history": [], "tool": c}
        for c in calls
    ]
    assert engine._state.turn_batch is not None
    decisions = engine.decide_many(docs)
    assert [d.verdict for d in decisions] == ["deny", "deny", "allow"]
    assert decisions[0].error is None and decisions[2].error is None
    assert decisions[1].error == ErrorType.UNDEFINED


def test_a_bundle_whose_turn_decisions_is_keyed_by_call_id_still_decides_a_turn(
    tmp_path: Path,
) -> None:
    from langchain_opa_guard.engines.policy_sources import load_sources
    from langchain_opa_guard.engines.wasm.bundles import (
        BATCH_ENTRYPOINT,
        BATCH_FILE,
        TURN_BATCH_ENTRYPOINT,
        batch_module,
        build_bundle,
        write_bundle,
    )

    sources = load_sources(POLICIES)
    keyed = batch_module("agent/authz/decision").split("\n\nturn_decisions")[0] + (
        "\n\nturn_decisions[input.turn[i].call_id] := decision if {\n"
        "\tsome i in input.calls\n"
        "\tdecision := data.agent.authz.decision with input.tool as input.turn[i]\n"
        "}\n"
    )
    bundle = build_bundle(
        {**sources.modules, BATCH_FILE: keyed},
        ["agent/authz/decision", BATCH_ENTRYPOINT, TURN_BATCH_ENTRYPOINT],
        opa=opa_binary(),
        data=sources.data,
    )
    path = tmp_path / "keyed.tar.gz"
    write_bundle(bundle, path)
    engine = EmbeddedPolicy(path)
    assert engine._state.turn_batch == TURN_BATCH_ENTRYPOINT
    calls = [
        call_input(n, GUEST, f"id-{i}")["tool"]
        for i, n in enumerate(["x", "fetch_url", "get_customer_details"])
    ]
    docs = [
        {"version": 1, "user": GUEST, "context": {}, "turn": calls, "history": [], "tool": c}
        for c in calls
    ]
    alone = [(d.verdict, d.reasons) for d in (engine.decide(x) for x in docs)]
    assert [v for v, _ in alone] == ["deny", "allow", "deny"]
    assert [(d.verdict, d.reasons) for d in engine.decide_many(docs)] == alone


def test_inputs_that_differ_in_json_type_are_not_decided_as_one() -> None:
    engine = EmbeddedPolicy(POLICIES)
    first = call_input("fetch_url", GUEST, "a")
    second = {**call_input("fetch_url", GUEST, "b"), "version": True}  # true is not 1
    decisions = engine.decide_many([first, second])
    assert [d.allow for d in decisions] == [True, False]
    assert "unsupported_version" in decisions[1].codes


def test_alike_results_share_a_decision_but_true_is_not_1(tmp_path: Path) -> None:
    root = write_policy(
        tmp_path / "p",
        'package agent.authz\n\ndecision := {"allow": input.tool.args.v, "reasons": []}\n',
    )
    engine = EmbeddedPolicy(root)
    docs = []
    for call_id, value in (("a", True), ("b", True), ("c", 1)):
        doc = call_input("fetch_url", GUEST, call_id)
        doc["tool"]["args"] = {"v": value}
        docs.append(doc)
    turn = [d["tool"] for d in docs]
    docs = [{**d, "turn": turn} for d in docs]
    a, b, c = engine.decide_many(docs)
    assert a.allow and b.allow and a is b
    assert (c.allow, c.error) == (False, ErrorType.MALFORMED)


def _child_verdicts(engine: EmbeddedPolicy) -> list[bool]:
    import asyncio

    turn = [call_input("delete_customer", GUEST, "a"), call_input("fetch_url", GUEST, "b")]
    out = [d.allow for d in engine.decide_many(turn)]
    out.append(asyncio.run(engine.adecide(call_input("delete_customer", ADMIN))).allow)
    out.append(engine.decide(call_input("delete_customer", GUEST)).allow)
    return out


EXPECTED = [False, True, True, False]


def test_fork_with_os_fork_after_warm_up() -> None:
    import asyncio

    engine = EmbeddedPolicy(POLICIES)
    assert _child_verdicts(engine) == EXPECTED  # warm: instances, worker threads, ticker
    asyncio.run(engine.adecide_many([call_input("fetch_url", GUEST)]))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, json.dumps(_child_verdicts(engine)).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert json.loads(os.read(read, 4096)) == EXPECTED
    os.close(read)
    assert _child_verdicts(engine) == EXPECTED  # the parent still works


_FORKED: EmbeddedPolicy | None = None


def _in_worker(_: int) -> list[bool]:
    assert _FORKED is not None
    return _child_verdicts(_FORKED)


def test_fork_with_a_process_pool() -> None:
    global _FORKED
    _FORKED = EmbeddedPolicy(POLICIES)
    assert _child_verdicts(_FORKED) == EXPECTED
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(2, mp_context=context) as workers:
        results = list(workers.map(_in_worker, range(8), timeout=30))
    assert results == [EXPECTED] * 8


def test_arguments_are_checked() -> None:
    for kwargs, name in (
        ({"timeout": 0}, "timeout"),
        ({"max_instances": 0}, "max_instances"),
        ({"memory_limit": 10}, "memory_limit"),
        ({"backend": "jit"}, "backend"),
    ):
        with pytest.raises(ValueError, match=name):
            EmbeddedPolicy(POLICIES, **kwargs)


def test_result_set_reader_takes_the_json_fast_path_and_keeps_sets() -> None:
    from langchain_opa_guard.decision import EngineError
    from langchain_opa_guard.engines.wasm.evaluator import read_result_set

    # One result of plain JSON: read as JSON.
    assert read_result_set(b'{{"result": {"allow": true, "reasons": []}}}') == [
        {"result": {"allow": True, "reasons": []}}
    ]
    # A result holding sets: the Rego reader, sets ordered as OPA's JSON orders them.
    assert read_result_set(b'{{"result": {"b", "a"}}}') == [{"result": ["a", "b"]}]
    assert read_result_set(b'{{"result": {"k": set()}}}') == [{"result": {"k": []}}]
    # Undefined: an empty result set.
    assert read_result_set(b"set()") == []
    # Two results are not mistaken for one.
    assert read_result_set(b'{{"result": 1}, {"result": 2}}') == [{"result": 1}, {"result": 2}]
    with pytest.raises(EngineError) as caught:
        read_result_set(b"{{not rego")
    assert caught.value.error_type == ErrorType.MALFORMED
