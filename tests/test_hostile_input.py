"""Hostile model output through the real guard node in a real graph (property tests).

A model's turn is untrusted: any tool name (known, unknown, empty, unicode, 20,000
characters, not a string), any arguments (nested, huge, objects JSON cannot hold, NaN), and
duplicate, empty or missing call ids. Whatever it proposes, the graph must not raise, every
call must be answered exactly once, and a call the policy did not allow must never reach
the ``ToolNode``.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fault_proxy import MODES, FaultProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from opa_process import free_port
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, ConfigDict
from test_guard_node import ADMIN, INTERNAL

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
)
from langchain_opa_guard.demo import customer_db_tools
from langchain_opa_guard.guards.denials import answer_id
from langchain_opa_guard.tracing import attributes as A

GUEST = {"id": "user-789", "role": "guest"}
MISSING = object()
"""Marks a key left out of the tool call altogether."""


class AnyArgs(BaseModel):
    """Accepts any keyword arguments, so an allowed call always reaches the tool's body
    with them (a schema must declare a field for LangChain to hand the tool any: one
    without fields is called with none, and decided so)."""

    model_config = ConfigDict(extra="allow")

    note: str | None = None


class RecordingTool(BaseTool):
    """A tool that records every time its body runs."""

    description: str = "Records its calls."
    args_schema: type[BaseModel] = AnyArgs
    runs: Any  # a list shared with the test (``Any``: pydantic keeps the same object)

    def _run(self, **kwargs: Any) -> str:
        self.runs.append((self.name, kwargs))
        return "ran"


class HostileAgent:
    """agent -> guard -> tools, where the agent's first answer is whatever the test sets.

    The graph has every tool the shipped policy names, so a tool it does not have is also
    one the policy has no rule for. ``entered`` records each call that reached the
    ``ToolNode``'s execution; ``runs`` each tool body that ran.
    """

    def __init__(self, engine: PolicyEngine) -> None:
        self.runs: list[tuple[str, dict[str, Any]]] = []
        customer_tools, self.db = customer_db_tools()
        extra = [
            RecordingTool(name=name, runs=self.runs)
            for name in ("fetch_url", "search_web", "send_email", "http_post")
        ]
        self.tools: list[BaseTool] = [*customer_tools, *extra]
        self.names = {tool.name for tool in self.tools}
        self.entered: list[tuple[Any, Any]] = []
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.message: AIMessage = AIMessage("nothing yet")

        def enter(request: Any, execute: Any) -> Any:
            self.entered.append((request.tool_call.get("id"), request.tool_call.get("name")))
            return execute(request)

        async def aenter(request: Any, execute: Any) -> Any:
            self.entered.append((request.tool_call.get("id"), request.tool_call.get("name")))
            return await execute(request)

        tool_node = GuardedToolNode(self.tools, wrap_tool_call=enter, awrap_tool_call=aenter)

        def agent(state: MessagesState) -> dict[str, Any]:
            if isinstance(state["messages"][-1], HumanMessage):
                return {"messages": [self.message]}
            return {"messages": [AIMessage("done")]}

        builder = StateGraph(MessagesState)
        builder.add_node("agent", agent)
        builder.add_node(
            "guard",
            PolicyGuardNode(engine, registry=tool_node, tracer_provider=self.provider),
        )
        builder.add_node("tools", tool_node)
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        self.graph = builder.compile()

    def reset(self) -> None:
        self.runs.clear()
        self.db.executed.clear()
        self.entered.clear()
        self.exporter.clear()

    def run(self, calls: list[dict[str, Any]], user: Any, mode: str) -> list[BaseMessage]:
        self.reset()
        self.message = proposal(calls)
        inputs = {"messages": [HumanMessage("go")]}
        if mode == "invoke":
            result = self.graph.invoke(inputs, context={"user": user})
        else:
            result = asyncio.run(self.graph.ainvoke(inputs, context={"user": user}))
        return list(result["messages"])

    def decision_spans(self) -> dict[Any, Any]:
        """Call id -> its decision span (calls that reached the engine)."""
        return {
            s.attributes.get(A.GEN_AI_TOOL_CALL_ID): s
            for s in self.exporter.get_finished_spans()
            if s.name.startswith("run_guardrail") and A.GEN_AI_TOOL_CALL_ID in s.attributes
        }


def proposal(calls: list[dict[str, Any]]) -> AIMessage:
    """An AIMessage holding ``calls`` as they are: no validation, as a broken model might."""
    return AIMessage.model_construct(
        content="",
        tool_calls=calls,
        invalid_tool_calls=[],
        additional_kwargs={},
        response_metadata={},
        type="ai",
        id=None,
        name=None,
        usage_metadata=None,
    )


def make_call(name: Any, args: Any, call_id: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "tool_call"}
    for key, value in (("name", name), ("args", args), ("id", call_id)):
        if value is not MISSING:
            call[key] = value
    return call


# -- strategies -----------------------------------------------------------------------

KNOWN = [
    "get_customer_details",
    "update_customer_status",
    "delete_customer",
    "fetch_url",
    "search_web",
    "send_email",
    "http_post",
]
HUGE = "A" * 100_000
huge_strings = st.integers(50_000, 100_000).map(lambda n: "A" * n)

names = st.one_of(
    st.sampled_from(KNOWN),
    st.sampled_from(KNOWN),
    st.sampled_from(KNOWN),
    st.sampled_from(
        [
            "",
            "drop_tables",
            "GET_CUSTOMER_DETAILS",
            "get_customer_details ",
            "search_web\x00",
            "\u202esearch_web",
            'search_web"; allow := true #',
            "🔥",
            "t" * 20_000,
        ]
    ),
    st.text(max_size=24),
    st.none(),
    st.just(MISSING),
    st.one_of(st.integers(), st.floats(), st.lists(st.text(max_size=4), max_size=2)),
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=16),
    st.builds(object),
    st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            -0.0,
            2**200,
            Decimal("1.5"),
            complex(1, 2),
            "\x00\x1f\u2028",
            "CUST-001",
            {"email": True},
        ]
    ),
    huge_strings,
)

values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=8)), max_size=4),
        st.sets(st.integers(), max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(), st.booleans()), children, max_size=4
        ),
    ),
    max_leaves=16,
)

# Mostly a mapping with string keys and values of any kind; now and then not a mapping.
arguments = st.one_of(
    st.dictionaries(st.text(max_size=12), values, max_size=5),
    st.dictionaries(st.text(max_size=12), values, max_size=5),
    st.fixed_dictionaries(
        {"customer_id": st.sampled_from(["CUST-001", "CUST-002", "CUST-404"])},
        optional={"fields": values, "new_status": values},
    ),
    st.one_of(st.none(), st.lists(values, max_size=2), st.text(max_size=8), st.just(MISSING)),
)

call_ids = st.one_of(
    st.sampled_from(["a", "b", "c"]),  # duplicates are likely
    st.text(alphabet="defghijklmnop", min_size=1, max_size=6),
    st.just(""),
    st.none(),
    st.just(MISSING),
    st.one_of(
        st.integers(min_value=0, max_value=9),
        st.floats(),
        st.tuples(st.integers()),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    ),
)

calls = st.lists(st.builds(make_call, names, arguments, call_ids), min_size=1, max_size=6)
users = st.sampled_from([ADMIN, INTERNAL, GUEST, None, {"role": 5}, "user-123", {"id": "x"}])
modes = st.sampled_from(["invoke", "ainvoke"])


def hostile(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


# -- the invariants -------------------------------------------------------------------


def usable_ids(proposed: list[dict[str, Any]]) -> set[str]:
    counts = Counter(c.get("id") for c in proposed if isinstance(c.get("id"), str))
    return {i for i, n in counts.items() if i and n == 1}


def check_invariants(
    agent: HostileAgent, proposed: list[dict[str, Any]], messages: list[BaseMessage]
) -> None:
    assert isinstance(messages[0], HumanMessage) and isinstance(messages[1], AIMessage)
    assert len(messages[1].tool_calls) == len(proposed)
    turn_at = 1
    answers: list[ToolMessage] = []
    for message in messages[turn_at + 1 :]:
        if not isinstance(message, ToolMessage):
            break
        answers.append(message)
    usable = usable_ids(proposed)

    # One answer per id (the id as the answer carries it); each usable id answered once.
    assert len(answers) == len({answer_id(c) for c in proposed}), [a.tool_call_id for a in answers]
    assert len({a.tool_call_id for a in answers}) == len(answers)
    answered = Counter(a.tool_call_id for a in answers)
    for call_id in usable:
        assert answered[call_id] == 1, call_id
    assert isinstance(messages[-1], AIMessage) and messages[-1].content == "done"

    # Only calls the policy allowed reached the ToolNode, each once, and only known tools.
    spans = agent.decision_spans()
    allowed = {i for i, s in spans.items() if s.attributes.get(A.OPA_DECISION_ALLOW) is True}
    entered_ids = [i for i, _ in agent.entered]
    assert len(entered_ids) == len(set(entered_ids))
    assert set(entered_ids) <= allowed & usable
    assert {name for _, name in agent.entered} <= agent.names
    assert len(agent.runs) + len(agent.db.executed) <= len(agent.entered)

    by_id = {a.tool_call_id: a for a in answers}
    for answer in answers:
        content = str(answer.content)
        assert "Traceback" not in content
        assert "is not a valid tool" not in content  # the ToolNode never saw an unknown tool
        record = (
            (answer.artifact or {}).get("opa_guard") if isinstance(answer.artifact, dict) else None
        )
        if record is not None:
            assert record["verdict"] != "allow"
            assert answer.status == "error"
            assert answer.tool_call_id not in entered_ids  # denied: never ran

    # A tool the graph does not have is denied by the policy, before the ToolNode.
    for call in proposed:
        name, call_id = call.get("name"), call.get("id")
        if not isinstance(call_id, str) or call_id not in usable:
            continue
        if not isinstance(name, str) or not name or name in agent.names:
            continue
        answer = by_id[call_id]
        assert answer.artifact["opa_guard"]["verdict"] == "deny"
        span = spans[call_id]
        if A.ERROR_TYPE not in span.attributes:  # the policy, not a failure, decided
            assert "no_rule_for_tool" in span.attributes[A.OPA_DECISION_REASON_CODES]


@pytest.fixture(scope="module")
def embedded_agent(embedded: EmbeddedPolicy) -> HostileAgent:
    return HostileAgent(embedded)


@pytest.fixture(scope="module")
def opa_agent(opa_url: str) -> Iterator[HostileAgent]:
    client = OPAServer(opa_url)
    yield HostileAgent(client)
    client.close()


@hostile(150)
@given(proposed=calls, user=users, mode=modes)
def test_hostile_turns_on_the_embedded_engine(
    embedded_agent: HostileAgent, proposed: list[dict[str, Any]], user: Any, mode: str
) -> None:
    messages = embedded_agent.run(proposed, user, mode)
    check_invariants(embedded_agent, proposed, messages)


@hostile(30)
@given(proposed=calls, user=users, mode=modes)
def test_hostile_turns_on_a_real_opa_server(
    opa_agent: HostileAgent, proposed: list[dict[str, Any]], user: Any, mode: str
) -> None:
    messages = opa_agent.run(proposed, user, mode)
    check_invariants(opa_agent, proposed, messages)


# -- the same properties, pinned to examples ---------------------------------------------


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_an_unknown_tool_is_denied_by_policy_before_the_tool_node(
    embedded_agent: HostileAgent, mode: str
) -> None:
    proposed = [
        make_call("drop_tables", {"really": True}, "x1"),
        make_call("search_web", {"q": "opa"}, "x2"),
    ]
    messages = embedded_agent.run(proposed, ADMIN, mode)
    check_invariants(embedded_agent, proposed, messages)
    answers = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    assert 'no rule allows tool "drop_tables"' in str(answers["x1"].content)
    assert embedded_agent.entered == [("x2", "search_web")]
    assert [name for name, _ in embedded_agent.runs] == ["search_web"]
    spans = embedded_agent.decision_spans()
    assert spans["x1"].attributes[A.OPA_DECISION_REASON_CODES] == ("no_rule_for_tool",)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_values_json_cannot_hold_reach_the_policy_converted(
    embedded_agent: HostileAgent, mode: str
) -> None:
    """Sets, text bytes and huge numbers reach the policy converted; a number JSON cannot
    carry (NaN, infinity) would reach it as a string while the tool ran the number, and an
    object or bytes that are not text could only reach it as their text, so a call holding
    one is denied before the policy is asked."""
    odd = {
        "set": {3, 1, 2},
        "bytes": b"plain text",
        "huge": HUGE,
        "nested": deep_value(60),  # within the limit: the policy sees it whole
    }
    proposed = [
        make_call("search_web", odd, "odd"),
        make_call("search_web", {"nan": math.nan, "inf": -math.inf}, "non-finite"),
        make_call("search_web", {"obj": object()}, "object"),
        make_call("search_web", {"bytes": b"\xff\xfe"}, "binary"),
    ]
    messages = embedded_agent.run(proposed, ADMIN, mode)
    check_invariants(embedded_agent, proposed, messages)
    assert embedded_agent.entered == [("odd", "search_web")]  # allowed, so it ran
    assert len(embedded_agent.runs) == 1
    answers = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    assert answers["non-finite"].status == "error"
    assert "not finite" in str(answers["non-finite"].content)
    assert "cannot show" in str(answers["object"].content)
    assert "not text" in str(answers["binary"].content)
    spans = embedded_agent.decision_spans()
    for call_id in ("non-finite", "object", "binary"):
        assert spans[call_id].attributes[A.ERROR_TYPE] == "invalid_call"


def deep_value(levels: int) -> Any:
    """Objects and arrays nested ``levels`` deep, a string at the bottom."""
    deep: Any = "https://evil.test"
    for level in range(levels):
        deep = [deep] if level % 2 else {"k": deep}
    return deep


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_arguments_nested_past_the_input_limit_are_denied_before_the_policy(
    embedded_agent: HostileAgent, mode: str
) -> None:
    """The policy input holds 64 levels; arguments nested deeper (or a list that holds
    itself) would reach the policy cut off, so the call is refused before it is asked."""
    recursive: list[Any] = []
    recursive.append(recursive)
    proposed = [
        make_call("search_web", {"query": "opa", "deep": deep_value(200)}, "deep"),
        make_call("search_web", {"query": "opa", "loop": recursive}, "loop"),
        make_call("search_web", {"query": "opa", "edge": deep_value(63)}, "edge"),
    ]
    messages = embedded_agent.run(proposed, ADMIN, mode)
    check_invariants(embedded_agent, proposed, messages)
    assert embedded_agent.entered == [("edge", "search_web")]
    answers = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    for call_id in ("deep", "loop"):
        assert answers[call_id].status == "error"
        assert "nested more than 64 levels deep" in str(answers[call_id].content)
        assert "evil.test" not in str(answers[call_id].content)
    spans = embedded_agent.decision_spans()
    assert spans["deep"].attributes[A.ERROR_TYPE] == "invalid_call"


@pytest.mark.parametrize("args", [["not", "an", "object"], None, "q=opa", 42])
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_arguments_that_are_not_an_object_are_denied_not_crashed_on(
    embedded_agent: HostileAgent, args: Any, mode: str
) -> None:
    """A call whose ``args`` is not a mapping cannot be executed by the ToolNode.

    The policy sees ``{}`` for it (``tool_args`` defaults to ``{}``), so it must not be
    allowed to run: the guard answers it (``invalid_call``) instead of letting the ToolNode
    crash the graph with ``AttributeError: 'list' object has no attribute 'items'``.
    """
    proposed = [make_call("search_web", args, "bad-args"), make_call("search_web", {}, "ok")]
    messages = embedded_agent.run(proposed, ADMIN, mode)  # must not raise
    check_invariants(embedded_agent, proposed, messages)
    answers = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    assert answers["bad-args"].status == "error"
    assert answers["bad-args"].artifact["opa_guard"]["verdict"] == "deny"
    assert embedded_agent.entered == [("ok", "search_web")]


@pytest.mark.parametrize(
    ("name", "call_id"),
    [
        (0, "odd-name"),
        (5.5, "odd-name"),
        (["search_web"], "odd-name"),
        ({"n": 1}, "odd-name"),
        ("search_web", {"a": 1}),
        ("search_web", ["x"]),
        ("search_web", (0,)),
        ("search_web", 1.5),
    ],
    ids=repr,
)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_names_and_ids_that_are_not_strings_are_answered_not_crashed_on(
    embedded_agent: HostileAgent, name: Any, call_id: Any, mode: str
) -> None:
    """A name or id of another type is an invalid call: denied and answered, never a crash.

    Today a non-string name makes ``denial_message`` build an invalid ``ToolMessage``
    (``name`` must be a string), and an unhashable id or name raises ``TypeError`` in the
    guard's planning (``call_id in answered``, ``metadata_of.get(name)``).
    """
    proposed = [make_call(name, {}, call_id), make_call("search_web", {}, "fine")]
    messages = embedded_agent.run(proposed, ADMIN, mode)  # must not raise
    check_invariants(embedded_agent, proposed, messages)
    assert embedded_agent.entered == [("fine", "search_web")]
    odd = [m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id != "fine"]
    assert len(odd) == 1 and odd[0].status == "error"
    assert odd[0].artifact["opa_guard"]["error"] == "invalid_call"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_calls_without_usable_ids_or_names_are_answered_and_never_run(
    embedded_agent: HostileAgent, mode: str
) -> None:
    proposed = [
        make_call("search_web", {}, MISSING),
        make_call("search_web", {}, ""),
        make_call("search_web", {}, None),
        make_call("search_web", {}, "dup"),
        make_call("search_web", {}, "dup"),
        make_call(MISSING, {}, "no-name"),
        make_call(None, {}, "none-name"),
        make_call("", {}, "empty-name"),
        make_call("search_web", {}, "fine"),
    ]
    messages = embedded_agent.run(proposed, ADMIN, mode)
    check_invariants(embedded_agent, proposed, messages)
    assert embedded_agent.entered == [("fine", "search_web")]
    answers = [m for m in messages if isinstance(m, ToolMessage)]
    invalid = [a for a in answers if a.tool_call_id != "fine"]
    # One answer per id: the three calls without a usable id share the empty id, the
    # duplicated "dup" is answered once; the three without a name have ids of their own.
    assert sorted(a.tool_call_id for a in invalid) == [
        "",
        "dup",
        "empty-name",
        "no-name",
        "none-name",
    ]
    assert all(a.artifact["opa_guard"]["error"] == "invalid_call" for a in invalid)


# -- engine internals never reach the model ------------------------------------------------

TOKEN = "s3cr3t-TOKEN"
URL_SECRET = "secret-token"


def leaks(text: str, port: int) -> list[str]:
    needles = [TOKEN, URL_SECRET, "user:", "127.0.0.1", f":{port}", "http://", "Traceback"]
    return [n for n in needles if n in text]


def shown_to_the_model(messages: list[BaseMessage]) -> list[str]:
    texts = []
    for message in messages:
        if isinstance(message, ToolMessage):
            texts.append(str(message.content))
            record = (
                message.artifact.get("opa_guard") if isinstance(message.artifact, dict) else None
            )
            if record:
                texts.extend(record["reasons"])
    return texts


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_an_unreachable_engine_reveals_no_url_host_or_token(mode: str) -> None:
    port = free_port()
    engine = OPAServer(f"http://user:{URL_SECRET}@127.0.0.1:{port}", token=TOKEN, timeout=0.5)
    agent = HostileAgent(engine)
    proposed = [make_call("search_web", {"q": "x"}, "q1"), make_call("fetch_url", {}, "q2")]
    messages = agent.run(proposed, ADMIN, mode)
    check_invariants(agent, proposed, messages)
    texts = shown_to_the_model(messages)
    assert len(texts) == 4 and agent.entered == []
    document = {"version": 1, "tool": {"name": "search_web", "args": {}}, "user": ADMIN}
    texts.extend(engine.decide(document).reasons)
    texts.extend(asyncio.run(engine.adecide(document)).reasons)
    for text in texts:
        assert not leaks(text, port), text


@pytest.mark.parametrize("fault", [m for m in MODES if m not in ("pass", "trickle", "truncated")])
def test_a_failing_engine_reveals_no_url_host_or_token(opa_url: str, fault: str) -> None:
    """Through the fault proxy, whose error bodies even echo the credentials back."""
    with FaultProxy(opa_url) as proxy:
        engine = OPAServer(
            f"http://user:{URL_SECRET}@127.0.0.1:{proxy.port}", token=TOKEN, timeout=0.3
        )
        agent = HostileAgent(engine)
        proxy.set(fault, delay=2.0, status=500 if fault != "status" else 401)
        texts: list[str] = []
        for mode in ("invoke", "ainvoke"):
            messages = agent.run([make_call("search_web", {"q": "x"}, "q1")], ADMIN, mode)
            assert agent.entered == []
            texts.extend(shown_to_the_model(messages))
        document = {"version": 1, "tool": {"name": "search_web", "args": {}}, "user": ADMIN}
        decisions = [engine.decide(document), asyncio.run(engine.adecide(document))]
        assert all(d.error is not None and not d.allow for d in decisions)
        texts.extend(r for d in decisions for r in d.reasons)
        assert proxy.decision_requests >= 4
    assert len(texts) >= 6
    for text in texts:
        assert text.startswith(("policy engine failed: ", 'The tool call "search_web"'))
        assert not leaks(text, proxy.port), text
