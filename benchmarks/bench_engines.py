"""Benchmark 0: the in-process engines and OPA's own evaluator, per decision, side by side.

One input shaped like the guard's (a 3-call turn, a 4-entry history, about 1.7 KB), on
the shipped policy: ``EmbeddedPolicy.decide`` on the wasm backend and on the regopy
fallback, interleaved in one process, and ``opa bench`` (OPA's Go evaluator) on the same
input. Then ``opa bench`` on the policy as it was when the goal was set
(``benchmarks/baseline-policy/``: authorization, customer database and exfiltration
rules), on the shipped policy before its rules were grouped (``benchmarks/previous-policy/``:
the same plus the information-flow and MCP packs), on the shipped one and on a policy that
allows everything (OPA's own work per query), alternating, in the same run. ``opa bench``
reports time per operation (noisy on a shared machine) and allocations per operation (the
same on every run: it counts the work, not the machine); where ``go`` and ``valgrind`` are
installed, the same four policies are also counted in instructions per decision of OPA's
evaluator (``benchmarks/policy_instructions.py``), which move by well under 1% between runs.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from common import POLICIES, ROOT, interleaved, us
from harness import NotedTable, ratio, turn_documents
from opa_process import opa_binary
from policy_instructions import PolicyInstructions, policy_instructions, unavailable

from langchain_opa_guard import EmbeddedPolicy

BASELINE = ROOT / "benchmarks" / "baseline-policy"
PREVIOUS = ROOT / "benchmarks" / "previous-policy"
OPA_ROUNDS = 7
ALLOW_ALL = 'package agent.authz\n\ndecision := {"allow": true, "reasons": []}\n'


def bench_input() -> dict[str, Any]:
    doc = turn_documents(3)[0]
    doc["history"] = [
        {
            **doc["turn"][0],
            "call_id": f"h{i}",
            "decision": "allow",
            "reasons": [],
            "status": "success",
        }
        for i in range(4)
    ]
    return doc


def opa_bench(policy_dir: Path, input_file: Path) -> tuple[float, int]:
    """``(ns/op, allocs/op)`` of ``opa bench`` on the decision."""
    out = subprocess.run(
        [
            opa_binary(),
            "bench",
            "--ignore",
            "*_test.rego",
            "-d",
            str(policy_dir),
            "-i",
            str(input_file),
            "data.agent.authz.decision",
            "--count",
            "1",
            "--format",
            "gobench",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"\s([\d.]+) ns/op", out)
    allocs = re.search(r"\s(\d+) allocs/op", out)
    if match is None or allocs is None:
        raise RuntimeError(f"unexpected opa bench output: {out[:300]}")
    return float(match.group(1)), int(allocs.group(1))


def run() -> list[NotedTable]:
    document = bench_input()
    wasm = EmbeddedPolicy(POLICIES)
    regopy = EmbeddedPolicy(POLICIES, backend="regopy")
    assert wasm.backend == "wasm" and regopy.backend == "regopy"
    a, b = wasm.decide(document), regopy.decide(document)
    if not (a.allow and b.allow):
        raise RuntimeError(f"unexpected decisions: {a} {b}")
    with tempfile.TemporaryDirectory() as tmp:
        input_file = Path(tmp) / "input.json"
        input_file.write_text(json.dumps(document))
        medians = interleaved(
            {"wasm": lambda: wasm.decide(document), "regopy": lambda: regopy.decide(document)},
            rounds=30,
            inner=50,
        )
        floor = Path(tmp) / "allow-all"
        floor.mkdir()
        (floor / "allow.rego").write_text(ALLOW_ALL)
        runs: dict[Path, list[float]] = {BASELINE: [], PREVIOUS: [], POLICIES: [], floor: []}
        allocs: dict[Path, int] = {}
        for round_ in range(OPA_ROUNDS):
            for policy_dir in runs if round_ % 2 == 0 else reversed(runs):
                ns, allocs[policy_dir] = opa_bench(policy_dir, input_file)
                runs[policy_dir].append(ns)
        missing = unavailable()
        counted: dict[Path, PolicyInstructions] = (
            {d: policy_instructions(d, input_file) for d in runs} if missing is None else {}
        )
    opa_shipped = statistics.median(runs[POLICIES]) / 1e9
    opa_baseline = statistics.median(runs[BASELINE]) / 1e9
    opa_previous = statistics.median(runs[PREVIOUS]) / 1e9
    opa_floor = statistics.median(runs[floor]) / 1e9
    table = NotedTable(
        "Per decision, shipped policy, one 1.7 KB input (medians; in-process sides "
        "interleaved in one process, 30 rounds x 50)",
        ["engine", "per decision", "vs wasm"],
    )
    table.add("EmbeddedPolicy, wasm (OPA-compiled WebAssembly)", us(medians["wasm"]), "1.00x")
    table.add(
        "EmbeddedPolicy, regopy fallback",
        us(medians["regopy"]),
        ratio(medians["regopy"], medians["wasm"]),
    )
    table.add(
        "opa bench (OPA's Go evaluator, no client)",
        us(opa_shipped),
        ratio(opa_shipped, medians["wasm"]),
    )
    speedup = medians["regopy"] / medians["wasm"]
    table.note(
        f"goal: wasm >= 3x faster than regopy per decision: {speedup:.2f}x "
        f"({'met' if speedup >= 3 else 'NOT met'})"
    )
    table.note("the in-process figures include encoding the input and building the Decision")
    policy = NotedTable(
        f"The shipped policy against the policy when the goal was set (opa bench; ns/op "
        f"median of {OPA_ROUNDS} alternating runs, allocs/op; instructions per decision of "
        f"OPA's evaluator under callgrind)",
        [
            "policy",
            "ns/op",
            "vs goal's baseline",
            "allocs/op",
            "vs goal's baseline",
            "instructions",
            "vs goal's baseline",
        ],
    )
    base_allocs = allocs[BASELINE]
    base_instructions = counted[BASELINE].instructions if counted else 0
    for label, seconds, policy_dir in (
        ("when the goal was set (benchmarks/baseline-policy)", opa_baseline, BASELINE),
        (
            "shipped before grouping, with the infoflow and MCP packs (benchmarks/previous-policy)",
            opa_previous,
            PREVIOUS,
        ),
        ("shipped (policies/)", opa_shipped, POLICIES),
        ("a policy that allows everything (OPA's own per-query work)", opa_floor, floor),
    ):
        instructions = counted[policy_dir].instructions if counted else 0
        policy.add(
            label,
            f"{seconds * 1e9:,.0f}",
            ratio(seconds, opa_baseline),
            f"{allocs[policy_dir]:,}",
            ratio(allocs[policy_dir], base_allocs),
            f"{instructions:,}" if counted else "not measured",
            ratio(instructions, base_instructions) if counted else "",
        )
    got = opa_shipped / opa_baseline
    policy.note(
        f"goal: at most half of the policy when the goal was set: {got:.2f}x in time, "
        f"{allocs[POLICIES] / base_allocs:.2f}x in allocations "
        f"({'met' if got <= 0.5 else 'NOT met'}); against the shipped policy before its "
        f"rules were grouped: {opa_shipped / opa_previous:.2f}x in time, "
        f"{allocs[POLICIES] / allocs[PREVIOUS]:.2f}x in allocations"
    )
    if counted:
        counted_ratio = counted[POLICIES].instructions / base_instructions
        policy.note(
            f"in instructions (OPA's own evaluator, the same version, evaluating the query "
            f"in process under valgrind's callgrind, garbage collection off; "
            f"benchmarks/policy_instructions.py): {counted_ratio:.3f}x the policy when the "
            f"goal was set ({'at most half' if counted_ratio <= 0.5 else 'more than half'}); "
            "a count moves by well under 1% between runs, where ns/op moves by a tenth"
        )
        refused = [str(d) for d, c in counted.items() if '"allow":true' not in c.result]
        if refused:
            raise RuntimeError(f"these policies did not allow the input: {refused}")
    else:
        policy.note(f"instructions not measured: {missing}")
    policy.note(
        "the shipped policy decides more than the goal's baseline did (the "
        "information-flow and MCP packs); every opa test case passes, and "
        "benchmarks/policy_equivalence.py checks that a rewrite decides thousands of "
        "generated inputs as before; an allowed call evaluates the decision (its first "
        "branch checks the role's tools itself, without asking for allow), the deny and "
        "approval sets (OPA's rule index leaves out the MCP, egress and destructive-call "
        "rules; the general refusals are looked for only when no rule allows), one scan "
        "of the history (for a refused call) and the customer-database checks; each read "
        "of data costs about 8-25 allocations, most of it OPA's cache of them"
    )
    tainted = tainted_table(wasm)
    wasm.close()
    regopy.close()
    return [table, policy, tainted]


def tainted_input(links: int) -> dict[str, Any]:
    """An email after a web page was read: the information-flow pack's worst common case."""
    body = "Summary of the page. " + " ".join(
        f"See https://news.example.org/story/{i}?ref=mail." for i in range(links)
    )
    read = {
        "name": "fetch_url",
        "args": {"url": "https://news.example.org/today"},
        "call_id": "f1",
        "metadata": {"trust": "untrusted", "read_only": True},
        "decision": "allow",
        "reasons": [],
        "status": "success",
    }
    call = {
        "name": "send_email",
        "args": {"to": "bob@example.com", "subject": "Today", "body": body},
        "call_id": "m1",
        "metadata": {"egress": {"destinations": ["to"], "content": ["subject", "body"]}},
    }
    document = bench_input()
    document.update(tool=call, turn=[call], history=[read])
    document["context"] = {
        **document["context"],
        "request": "Summarize news.example.org and mail it to bob@example.com",
    }
    return document


def tainted_table(wasm: EmbeddedPolicy) -> NotedTable:
    table = NotedTable(
        "After untrusted content: an email to a requested address, its body with 0 / 3 / 10 "
        "links (per decision, medians; wasm 15 rounds x 20, opa bench median of 3)",
        ["links in the body", "EmbeddedPolicy, wasm", "opa bench", "wasm vs the 1.7 KB input"],
    )
    plain = bench_input()
    for links in (0, 3, 10):
        document = tainted_input(links)

        def tainted(document: dict[str, Any] = document) -> Any:
            return wasm.decide(document)

        medians = interleaved(
            {"wasm": tainted, "plain": lambda: wasm.decide(plain)},
            rounds=15,
            inner=20,
        )
        with tempfile.TemporaryDirectory() as tmp:
            input_file = Path(tmp) / "input.json"
            input_file.write_text(json.dumps(document))
            ns = statistics.median(opa_bench(POLICIES, input_file)[0] for _ in range(3))
        table.add(
            str(links), us(medians["wasm"]), us(ns / 1e9), ratio(medians["wasm"], medians["plain"])
        )
    table.note(
        "the information-flow pack reads every link of the content as a browser would "
        "(hosts, escapes, renderer forms) once untrusted content was read; calls that send "
        "nothing out, and conversations that read nothing untrusted, skip it"
    )
    return table


if __name__ == "__main__":
    run()
