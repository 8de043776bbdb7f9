"""Customer-database tools, the five scenarios, and a guarded ReAct agent to run them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import tools_condition

from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.guards.execution import GuardedToolNode
from langchain_opa_guard.guards.guard_node import PolicyGuardNode
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

__all__ = ["Scenario", "build_agent", "customer_db_tools", "load_scenarios", "scenario_model"]

TOOLKIT = {"toolkit": "CustomerDBTool"}


@dataclass(frozen=True)
class Scenario:
    """One proposed tool call by one user, and what the guard must do with it."""

    name: str
    user: dict[str, Any]
    user_name: str
    query: str
    tool: str
    args: dict[str, Any]
    expect: str


def load_scenarios() -> list[Scenario]:
    """The five customer-database scenarios."""
    raw = json.loads(
        resources.files("langchain_opa_guard.demo").joinpath("customer_db.json").read_text()
    )
    users = raw["users"]
    return [
        Scenario(
            name=s["name"],
            user=dict(users[s["user"]]),
            user_name=s["user"],
            query=s["query"],
            tool=s["tool"],
            args=dict(s["args"]),
            expect=s["expect"],
        )
        for s in raw["scenarios"]
    ]


class CustomerDB:
    """An in-memory customer table that records every tool that really ran."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {
            "CUST-001": {
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+44 20 7946 0001",
                "status": "pending",
            },
            "CUST-002": {
                "name": "Alan Turing",
                "email": "alan@example.com",
                "phone": "+44 20 7946 0002",
                "status": "active",
            },
            "CUST-003": {
                "name": "Grace Hopper",
                "email": "grace@example.com",
                "phone": "+1 202 555 0003",
                "status": "inactive",
            },
        }
        self.executed: list[tuple[str, dict[str, Any]]] = []

    def get_customer_details(self, customer_id: str, fields: dict[str, bool] | None = None) -> str:
        self.executed.append(
            ("get_customer_details", {"customer_id": customer_id, "fields": fields})
        )
        row = self.rows.get(customer_id)
        if row is None:
            return f"no customer {customer_id}"
        wanted = [f for f, on in (fields or {}).items() if on] or list(row)
        return json.dumps({f: row[f] for f in wanted if f in row})

    def update_customer_status(self, customer_id: str, new_status: str) -> str:
        self.executed.append(
            ("update_customer_status", {"customer_id": customer_id, "new_status": new_status})
        )
        if customer_id not in self.rows:
            return f"no customer {customer_id}"
        self.rows[customer_id]["status"] = new_status
        return f"{customer_id} status is now {new_status}"

    def delete_customer(self, customer_id: str) -> str:
        self.executed.append(("delete_customer", {"customer_id": customer_id}))
        return (
            f"deleted {customer_id}"
            if self.rows.pop(customer_id, None)
            else f"no customer {customer_id}"
        )


def customer_db_tools(db: CustomerDB | None = None) -> tuple[list[BaseTool], CustomerDB]:
    """The three CustomerDBTool tools over ``db`` (a new table by default)."""
    db = db or CustomerDB()
    tools: list[BaseTool] = [
        StructuredTool.from_function(
            db.get_customer_details,
            name="get_customer_details",
            description="Read a customer's fields. `fields` maps field names to true.",
            metadata=dict(TOOLKIT),
        ),
        StructuredTool.from_function(
            db.update_customer_status,
            name="update_customer_status",
            description="Set a customer's status (active, inactive, pending, suspended).",
            metadata=dict(TOOLKIT),
        ),
        StructuredTool.from_function(
            db.delete_customer,
            name="delete_customer",
            description="Delete a customer.",
            metadata=dict(TOOLKIT),
        ),
    ]
    return tools, db


def scenario_model(scenarios: Sequence[Scenario]) -> ScriptedChatModel:
    """A scripted model that proposes each scenario's call when asked its query."""
    by_query = {s.query: s for s in scenarios}

    def first_turn(messages: Sequence[Any]) -> AIMessage:
        question = next(
            (str(m.content) for m in reversed(messages) if getattr(m, "type", "") == "human"), ""
        )
        scenario = by_query.get(question)
        if scenario is None:
            return AIMessage("I have no tool for that.")
        return AIMessage("", tool_calls=[tool_call(scenario.tool, scenario.args)])

    return ScriptedChatModel(script=[first_turn])


def _fresh_id(reply: Any, messages: Sequence[Any]) -> Any:
    """The model's reply with an id no earlier message has: ``add_messages`` replaces a
    message with the same id, and some servers reuse response ids, which would erase an
    earlier turn (and what it did) from the history the policy reads."""
    if reply.id is not None and any(getattr(m, "id", None) == reply.id for m in messages):
        return reply.model_copy(update={"id": f"{reply.id}-{uuid.uuid4().hex[:12]}"})
    return reply


def build_agent(
    engine: PolicyEngine,
    model: Any,
    tools: Sequence[BaseTool],
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    guard: Callable[..., Any] | None = None,
    edge: bool = False,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A ReAct agent with the policy guard between the model and its tools.

    ``agent -> guard -> tools -> agent``; the guard answers denied calls itself. With
    ``edge=True`` the guard is also the agent's conditional edge
    (:meth:`~langchain_opa_guard.PolicyGuardNode.edge`): a turn whose calls are all
    allowed goes from the agent to the tools directly, one graph step fewer per round.
    """
    bound = model.bind_tools(tools)
    tool_node = GuardedToolNode(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [_fresh_id(bound.invoke(state["messages"]), state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        reply = await bound.ainvoke(state["messages"])
        return {"messages": [_fresh_id(reply, state["messages"])]}

    from langchain_core.runnables import RunnableLambda

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent, name="agent"))
    guard_node = guard or PolicyGuardNode(engine, registry=tool_node)
    builder.add_node("guard", guard_node)
    builder.add_node("tools", tool_node)
    builder.add_edge(START, "agent")
    if edge:
        if not isinstance(guard_node, PolicyGuardNode):
            raise TypeError("edge=True needs a PolicyGuardNode as guard")
        builder.add_conditional_edges("agent", guard_node.edge("guard"), ["guard", "tools", END])
    else:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)
