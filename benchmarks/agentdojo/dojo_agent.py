"""The agent under test: a scripted model, the policy guard and LangGraph's ``ToolNode``,
run as an AgentDojo pipeline element so that AgentDojo itself judges every run.

```text
agent (scripted model) -> guard (PolicyGuardNode) -> tools (ToolNode over AgentDojo's runtime)
```

Each suite tool is a LangChain tool that runs AgentDojo's own function on the task's
environment (mutating it in place, as AgentDojo's pipeline does) and carries the suite's
metadata. A call the policy sends to a human pauses the graph; the reviewer here is an
oracle that approves the user task's calls and rejects the attacker's. What goes back to
AgentDojo holds only the calls that executed: a denied call was never made.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentdojo.agent_pipeline.base_pipeline_element import BasePipelineElement
from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
from agentdojo.functions_runtime import FunctionCall, FunctionsRuntime
from dojo_metadata import ROLE, TOOL_METADATA, directory_for
from dojo_plans import Turn, attack_turns, normalize_args, user_turns
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from langchain_opa_guard import Decision, GuardedToolNode, PolicyEngine, PolicyGuardNode

__all__ = ["CallRecord", "DojoPipeline", "RecordingEngine", "RunRecord", "build_graph"]

MODEL_NAME = "gpt-4o-2024-05-13"
"""AgentDojo's attacks address the model by name; the scripted model takes this one's."""


# --- The graph ------------------------------------------------------------------------


def build_graph(model: BaseChatModel, tools: Sequence[BaseTool], guard: Any | None) -> Any:
    """``agent -> guard -> tools``; without a guard, ``agent -> tools`` (the baseline)."""
    node_type = ToolNode if guard is None else GuardedToolNode
    tool_node = node_type(list(tools), handle_tool_errors=True)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", tool_node)
    builder.add_edge(START, "agent")
    if guard is None:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    else:
        builder.add_node("guard", guard)
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


# --- Tools over AgentDojo's runtime -------------------------------------------------------


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    dump = getattr(value, "model_dump", None)
    return _strings(dump()) if callable(dump) else []


def _squash(text: str) -> str:
    return " ".join(text.split())


_SCHEMAS: dict[type, dict[str, Any]] = {}


def schema_of(function: Any) -> dict[str, Any]:
    """A suite function's JSON schema (pydantic builds it slowly; it never changes)."""
    key = function.parameters
    if key not in _SCHEMAS:
        _SCHEMAS[key] = function.parameters.model_json_schema()
    return _SCHEMAS[key]


def make_tools(
    suite: str, runtime: FunctionsRuntime, env: Any, injections: Mapping[str, str]
) -> list[BaseTool]:
    """One LangChain tool per suite function, with the suite's metadata.

    The artifact of each result says whether it holds injected text (the scripted model
    uses it to decide when the attack starts; the policy never sees it).
    """
    markers = [_squash(text)[:60] for text in injections.values() if _squash(text)]
    tools: list[BaseTool] = []
    for function in runtime.functions.values():

        def run(_name: str = function.name, **kwargs: Any) -> tuple[str, dict[str, bool]]:
            result, error = runtime.run_function(env, _name, kwargs)
            if error is not None:
                raise ToolException(error)
            seen = _squash(" ".join(_strings(result)))
            return tool_result_to_str(result), {"injected": any(m in seen for m in markers)}

        tools.append(
            StructuredTool.from_function(
                func=run,
                name=function.name,
                description=function.description,
                args_schema=schema_of(function),
                response_format="content_and_artifact",
                metadata=TOOL_METADATA[suite][function.name],
                handle_tool_error=True,
            )
        )
    return tools


# --- The scripted, compromised model -------------------------------------------------------


class Script:
    """The calls of one run, turn by turn; the attack starts after the first injected result."""

    def __init__(
        self,
        turns: list[Turn],
        attack: Callable[[], list[Turn]] | None,
        answer: str,
        env: Any,
        schemas: Mapping[str, dict[str, Any]],
        attack_text: str = "",
    ) -> None:
        self.attack_text = attack_text
        self.pending: deque[tuple[str, Turn]] = deque(("user", t) for t in turns)
        self.attack = attack
        self.answer = answer
        self.env = env
        self.schemas = schemas
        self.kinds: dict[str, str] = {}
        self.attack_started = False
        self._ids = itertools.count(1)

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        if self.attack is not None and not self.attack_started and _saw_injection(messages):
            self.attack_started = True
            turns = self.attack()
            if not turns and self.attack_text:  # a text-only attack: the model says it
                self.answer = f"{self.answer}\n\n{self.attack_text}"
            self.pending.extendleft(("attack", t) for t in reversed(turns))
        while self.pending:
            kind, turn = self.pending.popleft()
            calls = turn(self.env)
            if not calls:
                continue
            tool_calls = []
            for name, args in calls:
                call_id = f"{kind}_{next(self._ids)}"
                self.kinds[call_id] = kind
                args = normalize_args(self.schemas.get(name, {}), args)
                tool_calls.append({"name": name, "args": args, "id": call_id, "type": "tool_call"})
            return AIMessage("", tool_calls=tool_calls)
        return AIMessage(self.answer)


def _saw_injection(messages: Sequence[BaseMessage]) -> bool:
    for message in reversed(messages):
        if not isinstance(message, ToolMessage):
            return False
        artifact = message.artifact
        if isinstance(artifact, Mapping) and artifact.get("injected"):
            return True
    return False


class ReplayChatModel(BaseChatModel):
    """A chat model whose every reply comes from a :class:`Script`."""

    script: Any
    model_name: str = MODEL_NAME

    @property
    def _llm_type(self) -> str:
        return "agentdojo-replay"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.script.reply(messages))])


# --- Recording what the policy decided ----------------------------------------------------


class RecordingEngine:
    """An engine that passes decisions through and keeps each call's last one."""

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine
        self.engine_name = engine.engine_name
        self.policy = engine.policy
        self.in_process = getattr(engine, "in_process", False)
        self.decisions: dict[str, Decision] = {}

    def _keep(self, document: Mapping[str, Any], decision: Decision) -> Decision:
        call_id = (document.get("tool") or {}).get("call_id")
        if isinstance(call_id, str):
            self.decisions[call_id] = decision
        return decision

    def decide(self, input: Mapping[str, Any]) -> Decision:
        return self._keep(input, self.engine.decide(input))

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        return self._keep(input, await self.engine.adecide(input))

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        return [self.decide(i) for i in inputs]

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        return [await self.adecide(i) for i in inputs]


# --- One run as an AgentDojo pipeline element -------------------------------------------------


@dataclass
class CallRecord:
    """What became of one proposed call."""

    call_id: str
    kind: str  # "user" or "attack"
    name: str
    read_only: bool
    outcome: str  # "executed", "denied", "rejected" (by the reviewer), "not run"
    reviewed: bool  # sent to the human reviewer
    codes: tuple[str, ...] = ()


@dataclass
class RunRecord:
    """One run: every call's fate, and whether a human was asked."""

    calls: list[CallRecord] = field(default_factory=list)
    attack_started: bool = False

    @property
    def approvals(self) -> int:
        return sum(1 for c in self.calls if c.reviewed)


class DojoPipeline(BasePipelineElement):
    """Runs one AgentDojo task through the LangGraph agent, guarded or not.

    Args:
        suite_name: ``workspace``, ``travel``, ``banking`` or ``slack``.
        user_task: The user task whose ground truth the agent performs.
        injection_task: The attacker's task, or ``None`` for a benign run.
        injections: The injected texts of this pair (vector id -> text).
        engine: The policy engine, or ``None`` for the unguarded baseline.
        callbacks: LangChain callbacks for the graph run (tracing).
    """

    name = MODEL_NAME

    def __init__(
        self,
        suite_name: str,
        user_task: Any,
        injection_task: Any | None,
        injections: Mapping[str, str],
        engine: PolicyEngine | None,
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.suite_name = suite_name
        self.user_task = user_task
        self.injection_task = injection_task
        self.injections = dict(injections)
        self.engine = RecordingEngine(engine) if engine is not None else None
        self.callbacks = list(callbacks)
        self.record = RunRecord()
        self.messages: list[BaseMessage] = []

    def query(
        self,
        query: str,
        runtime: FunctionsRuntime,
        env: Any = None,
        messages: Sequence[Any] = (),
        extra_args: dict[str, Any] | None = None,
    ) -> tuple[str, FunctionsRuntime, Any, Sequence[Any], dict[str, Any]]:
        start_env = env.model_copy(deep=True)
        schemas = {n: schema_of(f) for n, f in runtime.functions.items()}
        attack = None
        if self.injection_task is not None:
            task = self.injection_task
            attack = lambda: attack_turns(self.suite_name, task, env, start_env)  # noqa: E731
        script = Script(
            user_turns(self.user_task, start_env),
            attack,
            self.user_task.GROUND_TRUTH_OUTPUT,
            env,
            schemas,
            self.injection_task.GOAL if self.injection_task is not None else "",
        )
        tools = make_tools(self.suite_name, runtime, env, self.injections)
        guard = None
        if self.engine is not None:
            guard = PolicyGuardNode(self.engine, registry=tools, max_repeated_denials=None)
        graph = build_graph(ReplayChatModel(script=script), tools, guard)
        context = {
            "user": {"id": "emma", "role": ROLE},
            "directory": directory_for(self.suite_name, start_env),
        }
        config: dict[str, Any] = {
            "configurable": {"thread_id": "run"},
            "recursion_limit": 1_000,
            "max_concurrency": 1,
            "callbacks": self.callbacks,
        }
        reviewed: set[str] = set()
        result = graph.invoke({"messages": [HumanMessage(query)]}, config, context=context)
        while result.get("__interrupt__"):
            requests = result["__interrupt__"][0].value["requests"]
            decisions: list[dict[str, Any]] = []
            for request in requests:  # one decision per request, in order
                call_id = str(request["tool_call_id"])
                reviewed.add(call_id)
                decisions.append(
                    {"type": "approve"}
                    if script.kinds.get(call_id) == "user"
                    else {"type": "reject", "message": "the request did not ask for this"}
                )
            result = graph.invoke(Command(resume={"decisions": decisions}), config, context=context)
        self.messages = list(result["messages"])
        self.record = self._record(self.messages, script, reviewed)
        return query, runtime, env, _dojo_messages(query, self.messages), extra_args or {}

    def _record(
        self, messages: Sequence[BaseMessage], script: Script, reviewed: set[str]
    ) -> RunRecord:
        answers = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
        record = RunRecord(attack_started=script.attack_started)
        decisions = self.engine.decisions if self.engine is not None else {}
        for message in messages:
            if not isinstance(message, AIMessage):
                continue
            for call in message.tool_calls:
                call_id = str(call["id"])
                answer = answers.get(call_id)
                guard_record = _guard_record(answer)
                if answer is None:
                    outcome = "not run"
                elif guard_record is None:
                    outcome = "executed"
                elif guard_record.get("engine") == "human":
                    outcome = "rejected"
                else:
                    outcome = "denied"
                decision = decisions.get(call_id)
                metadata = TOOL_METADATA[self.suite_name].get(call["name"], {})
                record.calls.append(
                    CallRecord(
                        call_id=call_id,
                        kind=script.kinds.get(call_id, "user"),
                        name=call["name"],
                        read_only=bool(metadata.get("read_only")),
                        outcome=outcome,
                        reviewed=call_id in reviewed,
                        codes=decision.codes if decision is not None else (),
                    )
                )
        return record


def _guard_record(message: ToolMessage | None) -> Mapping[str, Any] | None:
    if message is None or not isinstance(message.artifact, Mapping):
        return None
    record = message.artifact.get("opa_guard")
    return record if isinstance(record, Mapping) else None


def _dojo_messages(query: str, messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """The run as AgentDojo's chat messages, with only the calls that executed."""
    results = {
        m.tool_call_id: m
        for m in messages
        if isinstance(m, ToolMessage) and _guard_record(m) is None
    }
    out: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "content": query}]}]
    for message in messages:
        if not isinstance(message, AIMessage):
            continue
        if not message.tool_calls:
            text = (
                message.content if isinstance(message.content, str) else json.dumps(message.content)
            )
            out.append(
                {
                    "role": "assistant",
                    "content": [{"type": "text", "content": text}],
                    "tool_calls": None,
                }
            )
            continue
        ran = [c for c in message.tool_calls if c["id"] in results]
        if not ran:
            continue
        calls = [FunctionCall(function=c["name"], args=c["args"], id=c["id"]) for c in ran]
        out.append({"role": "assistant", "content": None, "tool_calls": calls})
        for call in calls:
            result = results[str(call.id)]
            error = str(result.content) if result.status == "error" else None
            out.append(
                {
                    "role": "tool",
                    "content": [{"type": "text", "content": str(result.content)}],
                    "tool_call_id": call.id,
                    "tool_call": call,
                    "error": error,
                }
            )
    return out
