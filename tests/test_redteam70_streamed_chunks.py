"""Red team 70 (pins): a model that streams its tool calls in chunks, ids and arguments split
across them, with a call whose text does not parse (``invalid_tool_calls``), run with
``astream`` in every ``stream_mode`` at once and with ``astream_events``.

What was done: the model streams a turn of three calls: ``pay`` with 5000 (the policy
denies it; its JSON split over three chunks), ``read`` (allowed; its id arriving in a later
chunk than its name) and a ``pay`` whose text is not JSON (``}{``). Chunks are merged by LangChain
(``index``) and by ``add_messages`` in the graph.

Observed and expected (passes): the denied ``pay`` never runs, the allowed ``read`` runs
once, and each of the three ids has exactly one answer, on the guard node, the guard edge and
the middleware (the guard's edge before the guard node, so that the turn with a call that did
not parse reaches it).

Noted, not a finding: a call whose JSON is merely cut short (``{"amount": 1``, or
``{"amount": 1,,``) is not an ``invalid_tool_call``: LangChain's partial-JSON parser
completes it to ``{"amount": 1}``, which the policy decides and which is what runs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from mediation_kit import USER, Ledger, mediation_engine, mediation_tools, thread_config

from langchain_opa_guard import (
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyGuardNode,
    answer_open_calls,
)

engine = mediation_engine


def _chunks() -> list[AIMessageChunk]:
    parts = [
        [tool_call_chunk(name="pay", args='{"amo', id="p1", index=0)],
        [tool_call_chunk(name=None, args='unt": 50', id=None, index=0)],
        [
            tool_call_chunk(name=None, args="00}", id=None, index=0),
            tool_call_chunk(name="read", args="", id=None, index=1),
        ],
        [tool_call_chunk(name=None, args='{"item": "i"}', id="r1", index=1)],
        [tool_call_chunk(name="pay", args="}{", id="x1", index=2)],
    ]
    out = [AIMessageChunk("", id="turn-s1", tool_call_chunks=p) for p in parts]
    return out


class StreamingModel(BaseChatModel):
    """Streams the turn above once, then answers "done"."""

    @property
    def _llm_type(self) -> str:
        return "rt70-streaming"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> StreamingModel:  # type: ignore[override]
        return self

    def _first(self, messages: Sequence[BaseMessage]) -> bool:
        return not any(isinstance(m, AIMessage) for m in messages)

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        parts = _chunks() if self._first(messages) else [AIMessageChunk("done")]
        for part in parts:
            chunk = ChatGenerationChunk(message=part)
            if run_manager is not None:
                run_manager.on_llm_new_token("", chunk=chunk)
            yield chunk

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        parts = _chunks() if self._first(messages) else [AIMessageChunk("done")]
        for part in parts:
            chunk = ChatGenerationChunk(message=part)
            if run_manager is not None:
                await run_manager.on_llm_new_token("", chunk=chunk)
            yield chunk

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        merged: Any = None
        for chunk in self._stream(messages):
            merged = chunk if merged is None else merged + chunk
        message = merged.message
        return ChatResult(
            generations=[
                ChatGeneration(
                    message=AIMessage(
                        content=message.content,
                        id=message.id,
                        tool_calls=message.tool_calls,
                        invalid_tool_calls=message.invalid_tool_calls,
                    )
                )
            ]
        )


def _graph(wiring: str, ledger: Ledger) -> Any:
    tools = mediation_tools(ledger)
    model = StreamingModel()
    if wiring == "middleware":
        return create_agent(
            model,
            tools,
            middleware=[OPAGuardMiddleware(engine_of[0], registry=tools)],
            checkpointer=InMemorySaver(),
        )
    node = GuardedToolNode(tools)
    guard = PolicyGuardNode(engine_of[0], registry=node)

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node(answer_open_calls)
    builder.add_node("agent", agent)
    builder.add_node("guard", guard)
    builder.add_node("tools", node)
    builder.add_edge(START, "answer_open_calls")
    builder.add_edge("answer_open_calls", "agent")
    # The guard's own edge: a turn with a call that did not parse reaches the guard node
    # (README: tools_condition would end such a turn unanswered).
    builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


engine_of: list[Any] = []


@pytest.mark.parametrize("how", ["astream", "astream_events"])
@pytest.mark.parametrize("wiring", ["node", "middleware"])
def test_a_streamed_turn_is_decided_as_merged(engine: Any, wiring: str, how: str) -> None:
    engine_of[:] = [engine]
    ledger = Ledger()
    graph = _graph(wiring, ledger)
    config = thread_config(f"rt70-stream-{wiring}-{how}")
    inputs = {"messages": [HumanMessage("pay 5000 and read i")]}

    async def go() -> None:
        if how == "astream":
            async for _ in graph.astream(
                inputs,
                config,
                context={"user": USER},
                stream_mode=["messages", "updates", "values", "tasks", "debug", "custom"],
                subgraphs=True,
            ):
                pass
        else:
            async for _ in graph.astream_events(
                inputs, config, context={"user": USER}, version="v2"
            ):
                pass

    asyncio.run(go())
    messages = graph.get_state(config).values["messages"]
    assert [name for name, _, _ in ledger.runs] == ["read"], ledger.runs
    answers = Counter(m.tool_call_id for m in messages if isinstance(m, ToolMessage))
    assert answers == Counter({"p1": 1, "r1": 1, "x1": 1}), answers
