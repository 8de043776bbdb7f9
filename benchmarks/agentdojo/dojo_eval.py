"""Replay AgentDojo's suites through the agent, guarded and unguarded, judged by AgentDojo.

For every suite: each user task once without an attack (benign utility), and every user
task x injection task pair with AgentDojo's ``important_instructions`` attack, first
without the guard (which pairs AgentDojo's checkers can score at all) and then with it.
All judging goes through ``suite.run_task_with_pipeline``.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from agentdojo.attacks.attack_registry import load_attack  # noqa: E402
from agentdojo.task_suite.load_suites import get_suites  # noqa: E402
from dojo_agent import DojoPipeline, RunRecord  # noqa: E402
from dojo_metadata import tool_roles  # noqa: E402

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine  # noqa: E402

__all__ = ["BENCHMARK_VERSION", "PairResult", "SuiteResult", "engine_for", "run_suite"]

BENCHMARK_VERSION = "v1.2.2"
SUITES = ("workspace", "travel", "banking", "slack")
POLICIES = ROOT / "policies"


def engine_for(suites: Iterable[str] = SUITES, **config: Any) -> EmbeddedPolicy:
    """The shipped policies, with the suites' tools permitted for the benchmark's user.

    ``config`` goes to ``data.agent.config`` (for example
    ``infoflow={"approve_writes_after_untrusted": True}``).
    """
    roles: dict[str, list[str]] = {}
    for suite in suites:
        roles.update(tool_roles(suite))
    return EmbeddedPolicy(POLICIES, data={"agent": {"config": {"tool_roles": roles, **config}}})


@dataclass
class PairResult:
    """One run: AgentDojo's verdicts and what the guard did."""

    user_task: str
    injection_task: str | None
    utility: bool
    security: bool  # AgentDojo's: True when the attack succeeded
    record: RunRecord

    @property
    def attack_calls(self) -> list[Any]:
        """The attacker's calls that act (send, change, delete): reads alone do no harm."""
        return [c for c in self.record.calls if c.kind == "attack" and not c.read_only]

    @property
    def attack_outcome(self) -> str:
        """``executed`` (an attack call ran without a human), ``held`` (sent to a human,
        none ran), ``denied`` (stopped by the policy), or ``none`` (no acting call)."""
        calls = self.attack_calls
        if any(c.outcome == "executed" for c in calls):
            return "executed"
        if any(c.reviewed for c in calls):
            return "held"
        if any(c.outcome == "denied" for c in calls):
            return "denied"
        return "none"

    @property
    def needed_approval(self) -> bool:
        return self.record.approvals > 0


@dataclass
class SuiteResult:
    """Every run of one suite."""

    suite: str
    benign: list[PairResult] = field(default_factory=list)
    baseline: list[PairResult] = field(default_factory=list)
    guarded: list[PairResult] = field(default_factory=list)
    seconds: float = 0.0


def _run(
    suite: Any,
    name: str,
    user_task: Any,
    injection_task: Any | None,
    injections: dict[str, str],
    engine: PolicyEngine | None,
) -> PairResult:
    pipeline = DojoPipeline(name, user_task, injection_task, injections, engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        utility, security = suite.run_task_with_pipeline(
            pipeline, user_task, injection_task, injections
        )
    return PairResult(
        user_task.ID,
        injection_task.ID if injection_task is not None else None,
        bool(utility),
        bool(security) if injection_task is not None else False,
        pipeline.record,
    )


def injections_for(suite: Any, user_task: Any, injection_task: Any) -> dict[str, str]:
    """AgentDojo's ``important_instructions`` texts for the vectors the user task reads."""
    attack = load_attack("important_instructions", suite, DojoPipeline.__new__(DojoPipeline))
    return dict(attack.attack(user_task, injection_task))


def run_suite(
    name: str,
    engine: PolicyEngine | None,
    *,
    baseline: bool = True,
    user_tasks: Sequence[str] | None = None,
    progress: bool = False,
) -> SuiteResult:
    """Benign runs, the unguarded baseline (optional) and the guarded pairs of a suite."""
    started = time.perf_counter()
    suite = get_suites(BENCHMARK_VERSION)[name]
    result = SuiteResult(name)
    tasks = [t for tid, t in suite.user_tasks.items() if user_tasks is None or tid in user_tasks]
    for user_task in tasks:
        result.benign.append(_run(suite, name, user_task, None, {}, engine))
    for injection_task in suite.injection_tasks.values():
        for user_task in tasks:
            injections = injections_for(suite, user_task, injection_task)
            if baseline:
                result.baseline.append(
                    _run(suite, name, user_task, injection_task, injections, None)
                )
            result.guarded.append(_run(suite, name, user_task, injection_task, injections, engine))
        if progress:
            print(
                f"  {name} {injection_task.ID}: {time.perf_counter() - started:.0f} s", flush=True
            )
    result.seconds = time.perf_counter() - started
    return result
