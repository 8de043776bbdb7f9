"""Benchmark 0: the in-process engines and OPA's own evaluator, per decision, side by side.

One input shaped like the guard's (a 3-call turn, a 4-entry history, about 1.7 KB), on
the shipped policy: ``EmbeddedPolicy.decide`` on the wasm backend and on the regopy
fallback, interleaved in one process, and ``opa bench`` (OPA's Go evaluator) on the same
input. Then ``opa bench`` on the policy as it was before it was made cheaper
(``benchmarks/baseline-policy/``) against the shipped one, alternating, in the same run.
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

from langchain_opa_guard import EmbeddedPolicy

BASELINE = ROOT / "benchmarks" / "baseline-policy"
OPA_ROUNDS = 5


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


def opa_bench_ns(policy_dir: Path, input_file: Path) -> float:
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
    if match is None:
        raise RuntimeError(f"unexpected opa bench output: {out[:300]}")
    return float(match.group(1))


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
        shipped, baseline = [], []
        for _ in range(OPA_ROUNDS):
            baseline.append(opa_bench_ns(BASELINE, input_file))
            shipped.append(opa_bench_ns(POLICIES, input_file))
    opa_shipped = statistics.median(shipped) / 1e9
    opa_baseline = statistics.median(baseline) / 1e9
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
        f"The shipped policy against the policy before this change (opa bench ns/op, "
        f"median of {OPA_ROUNDS} alternating runs)",
        ["policy", "ns/op", "vs before"],
    )
    policy.add("before (benchmarks/baseline-policy)", f"{opa_baseline * 1e9:,.0f}", "1.00x")
    policy.add("shipped (policies/)", f"{opa_shipped * 1e9:,.0f}", ratio(opa_shipped, opa_baseline))
    got = opa_shipped / opa_baseline
    policy.note(
        f"goal: at most half of before: {got:.2f}x ({'met' if got <= 0.5 else 'NOT met'}); "
        "every opa test case passes on both"
    )
    wasm.close()
    regopy.close()
    return [table, policy]


if __name__ == "__main__":
    run()
