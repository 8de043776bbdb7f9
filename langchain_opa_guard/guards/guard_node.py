"""The guard node: a LangGraph node between the reasoning node and a ``ToolNode``.

Why one module: :class:`PolicyGuardNode` is one LangGraph node whose routes (to the tools,
back to the model, to itself for approval, to the end) and whose edge form
(:meth:`PolicyGuardNode.edge`) share one decided turn; the deciding, the approval and the
hand-over to the tools are in modules of their own.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, cast

from langchain_core.messages import AIMessage, AnyMessage, ToolCall
from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_RUNTIME
from langgraph._internal._runnable import RunnableCallable
from langgraph.constants import END
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from langchain_opa_guard.contract import state_messages
from langchain_opa_guard.decision import Decision
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.guards.approval import TICKET_KEY
from langchain_opa_guard.guards.arguments import check_name
from langchain_opa_guard.guards.claims import decided_turn
from langchain_opa_guard.guards.denials import (
    DenialStyle,
    run_stopped_message,
    turn_stopped_message,
    unsealed_call_message,
)
from langchain_opa_guard.guards.execution import (
    GuardedToolNode,
    call_digest,
    calls_payload,
    reads_no_state,
    task_groups,
)
from langchain_opa_guard.guards.guard_edge import (
    ROUTED_KEY,
    routed,
    routed_decisions,
    routed_turn,
    without_routed,
)
from langchain_opa_guard.guards.live_turn import fingerprint, turn_still_open
from langchain_opa_guard.guards.planning import InputBuilder, Turn
from langchain_opa_guard.guards.resume import Reviewed
from langchain_opa_guard.guards.seals import (
    binding,
    binding_holds,
    decider_rules,
    engine_revision,
    guard_scope,
    mapping_sealed,
    seal_mapping,
)
from langchain_opa_guard.guards.turns import ToolRegistry, TurnDecider
from langchain_opa_guard.ops.decision_log import DecisionLog

logger = logging.getLogger(__name__)

__all__ = ["PolicyGuardNode"]


class PolicyGuardNode(RunnableCallable):
    """A LangGraph node that lets a tool call run only when the policy allows it.

    For every tool call of the last ``AIMessage`` it builds one policy input document (see
    :mod:`langchain_opa_guard.contract`), asks the engine about all the calls of the turn
    together, and then:

    * sends the allowed calls themselves, each with a grant (its id and a digest of its
      arguments), to a :class:`~langchain_opa_guard.GuardedToolNode` in one ``Send``; that
      node runs nothing else, so a denied call can never run, whatever form the model's
      message takes after a checkpoint round trip;
    * answers each denied call with exactly one ``ToolMessage`` (``status="error"``) that
      gives the policy's reasons, so the model can re-plan;
    * asks a human once for all the calls of the turn that need approval, before anything
      of the turn runs (``interrupt()``, answered like LangChain's
      ``HumanInTheLoopMiddleware``; see :mod:`langchain_opa_guard.guards.approval`);
    * goes back to the reasoning node when nothing was allowed.

    Arguments are checked against the tool's own schema before the policy sees them, so
    the policy decides on the arguments that will run (``"5000"`` for an integer field is
    decided and run as ``5000``); a call whose arguments do not validate is denied before
    the policy is asked. Engine failures (OPA down, slow, erroring, undefined or malformed
    output) deny the call: the node never raises into the graph for them.

    The node declares its destinations (``tools`` and ``agent``), so the compiled graph
    draws the guard's edges.

    Args:
        engine: An :class:`~langchain_opa_guard.OPAServer`, an
            :class:`~langchain_opa_guard.EmbeddedPolicy`, or any :class:`PolicyEngine`.
        tools: Name of the ``GuardedToolNode`` node.
        agent: Name of the reasoning node the model's answers come back to.
        registry: The tools (the ``GuardedToolNode``, a list of tools, or a mapping of tool
            name to metadata), so each input carries the tool's ``metadata`` and arguments
            are checked against the tool's schema (not possible with a mapping).
        build_input: ``(default_input, call, state) -> input`` to extend or replace inputs.
        denial_style: ``"full"`` reasons, ``"generic"`` text, or a function of
            ``(decision, call)``, for what the model is told.
        messages_key: State key of the message list.
        user_key: Key of the subject in the runtime context or ``configurable``.
        approvals: What a policy's ``require_approval`` does: ``"interrupt"`` pauses the
            graph for a human (needs a checkpointer), ``"deny"`` treats it as a deny.
        fail_open: Names of tools that may run when the policy engine *fails* (never when
            the policy denies). Off for every tool by default; each use is logged at
            WARNING and traced as ``opa.decision.fail_open``.
        shadow: Shadow mode: ``True`` for every decision, or a collection of tool names
            and reason codes. A shadowed deny is evaluated, logged, traced and counted as
            "would deny", but the call runs. Use it to roll a policy out before enforcing.
        max_repeated_denials: When the model proposes a call (same tool, same arguments)
            that was already denied this many times in the conversation, the guard ends
            the run with a clear message instead of letting the model retry forever
            (each repeat before that gets a firmer denial). ``None`` turns this off.
        decision_log: Record every decision (input, decision, revision) as JSON lines,
            for ``python -m langchain_opa_guard replay``.
        tracer_provider, meter_provider: For decision spans and metrics when no
            :class:`~langchain_opa_guard.OTelCallbackHandler` is in the run's callbacks
            (with one, the handler's providers are used and the decision spans nest in the
            guard node's span). Default: the global providers.
        name: Name of the node's runnable.

    Raises:
        TypeError, ValueError: At construction, for an argument of the wrong type or
            value (the message names it); for a plain ``ToolNode`` as ``registry``, which
            would run whatever the state holds.

    Example:
        ```python
        from langgraph.graph import END, START, MessagesState, StateGraph
        from langgraph.prebuilt import tools_condition

        from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode

        tool_node = GuardedToolNode(tools)
        builder = StateGraph(MessagesState)
        builder.add_node("agent", call_model)
        builder.add_node("guard", PolicyGuardNode(EmbeddedPolicy("policies"), registry=tool_node))
        builder.add_node("tools", tool_node)
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        graph = builder.compile()

        graph.invoke(
            {"messages": [("user", "Delete customer CUST-003")]},
            context={"user": {"id": "user-789", "role": "guest"}},
        )
        ```
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        tools: str = "tools",
        agent: str = "agent",
        registry: ToolRegistry | None = None,
        build_input: InputBuilder | None = None,
        denial_style: DenialStyle = "full",
        messages_key: str = "messages",
        user_key: str = "user",
        approvals: Literal["interrupt", "deny"] = "interrupt",
        fail_open: Collection[str] = (),
        shadow: bool | Collection[str] = False,
        max_repeated_denials: int | None = 3,
        decision_log: DecisionLog | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        name: str = "policy_guard",
    ) -> None:
        turns = TurnDecider(
            engine,
            tools=tools,
            agent=agent,
            registry=registry,
            build_input=build_input,
            denial_style=denial_style,
            messages_key=messages_key,
            user_key=user_key,
            approvals=approvals,
            fail_open=fail_open,
            shadow=shadow,
            max_repeated_denials=max_repeated_denials,
            decision_log=decision_log,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        super().__init__(self._func, self._afunc, name=check_name(name, "name"), trace=False)
        self.turns = turns
        self.engine = turns.engine
        self.tools_node = turns.tools_node
        self.agent_node = turns.agent_node
        self.messages_key = turns.messages_key
        if registry is None:
            logger.warning(
                "PolicyGuardNode(name=%r) has no registry=: the policy sees no tool metadata "
                "(trust, egress, MCP annotations) and arguments are decided unvalidated; pass "
                "the graph's GuardedToolNode as registry=",
                name,
            )
        # A tools node that never reads the state gets each call without a copy of it.
        self._stateless_sends = reads_no_state(registry)
        # What this guard hands on is bound to it (its engine and nodes): the tools node it
        # was given takes no other guard's grants.
        self._scope = guard_scope(
            self.engine, self.agent_node, self.tools_node, rules=decider_rules(self.turns)
        )
        if isinstance(registry, GuardedToolNode):
            registry.accept_guard(self._scope, lambda: engine_revision(self.engine))
        self._declare_destinations()

    def __repr__(self) -> str:
        return (
            f"PolicyGuardNode({self.engine!r}, tools={self.tools_node!r}, "
            f"agent={self.agent_node!r})"
        )

    # LangGraph reads a node's destinations from the return annotation of ``__call__``;
    # each guard routes to its own two nodes, so each instance carries its own annotation.
    def __call__(self, state: Any) -> Any:  # pragma: no cover - LangGraph calls invoke
        return self.invoke(state)

    def _declare_destinations(self) -> None:
        def __call__(self: PolicyGuardNode, state: Any) -> Any:
            return self.invoke(state)

        __call__.__annotations__ = {
            "return": Command[Literal[self.tools_node, self.agent_node]]  # type: ignore[name-defined]
        }
        self.__dict__["__call__"] = types.MethodType(__call__, self)

    # -- the node's work, sync and async twins ----------------------------------------

    def _func(self, state: Any, config: RunnableConfig, runtime: Runtime) -> Command[Any]:
        if self._sent_back(state, config):
            return Command(goto=END)
        ticket = _ticket(state)
        if ticket is not None and not self._ticket_holds(ticket, config):
            return self._unsealed_ticket(ticket)
        if ticket is not None:
            reviewed = self.turns.review(ticket, config, runtime)
            return self._after_review(state, ticket, reviewed, config)
        carried, state = state, without_routed(state)
        turn = self.turns.plan(state, config, runtime)
        if turn is None:
            return Command(goto=END)
        decided = routed_decisions(carried, turn, config, self._scope, self.engine)
        if decided is not None:  # the edge's: its calls run once under the edge's turn
            return self._route(state, turn, decided, config, routed_turn(carried))
        return self._route(state, turn, self.turns.decide(turn, config), config)

    async def _afunc(self, state: Any, config: RunnableConfig, runtime: Runtime) -> Command[Any]:
        if self._sent_back(state, config):
            return Command(goto=END)
        ticket = _ticket(state)
        if ticket is not None and not self._ticket_holds(ticket, config):
            return self._unsealed_ticket(ticket)
        if ticket is not None:
            reviewed = await self.turns.areview(ticket, config, runtime)
            return self._after_review(state, ticket, reviewed, config)
        carried, state = state, without_routed(state)
        turn = self.turns.plan(state, config, runtime)
        if turn is None:
            return Command(goto=END)
        decided = routed_decisions(carried, turn, config, self._scope, self.engine)
        if decided is not None:
            return self._route(state, turn, decided, config, routed_turn(carried))
        return self._route(state, turn, await self.turns.adecide(turn, config), config)

    # -- the guard as the reasoning node's edge -----------------------------------------

    def edge(self, node: str = "guard") -> RunnableCallable:
        """This guard as the reasoning node's conditional edge, in place of
        ``tools_condition``: a turn whose calls are all allowed goes to the tools in the
        step that proposed it (one graph step fewer per round); any other turn goes on to
        this guard, added to the graph as ``node``, with the decisions made.

        Example:
            ```python
            guard = PolicyGuardNode(engine, registry=tools)
            builder.add_node("guard", guard)
            builder.add_node("tools", tools)
            builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
            builder.add_edge("tools", "agent")
            ```

        The policy input's ``context.node`` is then the reasoning node's name (the edge
        decides in its step).
        """
        node = check_name(node, "node")

        # Outside a run (``update_state(..., as_node=<agent>)`` asks the agent's edges where
        # the edited state goes) there is no runtime, so no user context to decide with: the
        # turn goes to the guard node, which decides it when the run resumes.
        def route(state: Any, config: RunnableConfig) -> Any:
            runtime = _runtime_of(config)
            if runtime is None:
                return node
            turn = self.turns.plan(state, config, runtime)
            if turn is None:
                return END
            return self._edge_route(state, turn, self.turns.decide(turn, config), config, node)

        async def aroute(state: Any, config: RunnableConfig) -> Any:
            runtime = _runtime_of(config)
            if runtime is None:
                return node
            turn = self.turns.plan(state, config, runtime)
            if turn is None:
                return END
            decided = await self.turns.adecide(turn, config)
            return self._edge_route(state, turn, decided, config, node)

        return RunnableCallable(route, aroute, name=f"{self.name}:edge", trace=False)

    def _edge_route(
        self,
        state: Any,
        turn: Turn,
        decided: Sequence[Decision],
        config: RunnableConfig,
        node: str,
    ) -> Any:
        """The allowed calls to the tools when that is all the turn holds; else the turn,
        with its decisions, to the guard node."""
        out = self.turns.settle(turn, decided)
        plain = not (out.stop or out.pending or out.answers) and out.ai_message is turn.ai_message
        if plain and out.allowed:
            earlier = turn.messages[: turn.ai_index]
            command = self._to_tools(
                state,
                earlier,
                out.ai_message,
                out.allowed,
                None,
                config,
                out.views,
                revision=out.revision,
            )
            return command.goto
        payload = _with_messages(state, self.messages_key, turn.messages)
        turn_id = decided_turn(turn.ai_message.id, config)
        bound = self._binding(config, out.revision)
        payload[ROUTED_KEY] = routed(turn, decided, bound, turn_id)
        return Send(node, payload)

    # -- routing a decided turn ---------------------------------------------------------

    def _route(
        self,
        state: Any,
        turn: Turn,
        decided: Sequence[Decision],
        config: RunnableConfig,
        turn_id: str | None = None,
    ) -> Command[Any]:
        out = self.turns.settle(turn, decided)
        messages_update: list[Any] = []
        if out.ai_message is not turn.ai_message:
            messages_update.append(out.ai_message)
        if out.stop:
            return self._stop_turn(turn, out.allowed, out.pending, messages_update + out.answers)
        messages_update += out.answers
        update = {self.messages_key: messages_update} if messages_update else None
        if out.pending:
            payload = _with_messages(state, self.messages_key, turn.messages)
            ticket = self.turns.ticket_for(turn, out)
            ticket["binding"] = self._binding(config)
            ticket["before"] = fingerprint(turn.messages[: turn.ai_index], turn.ai_message)
            ticket["seal"] = seal_mapping(TICKET_KEY, ticket)
            payload[TICKET_KEY] = ticket
            here = (config.get("metadata") or {}).get("langgraph_node") or "guard"
            return Command(update=update, goto=Send(str(here), payload))
        earlier = turn.messages[: turn.ai_index]
        return self._to_tools(
            state,
            earlier,
            out.ai_message,
            out.allowed,
            update,
            config,
            out.views,
            turn_id,
            revision=out.revision,
        )

    def _to_tools(
        self,
        state: Any,
        earlier: Sequence[AnyMessage],
        ai_message: AIMessage,
        allowed: Sequence[ToolCall],
        update: dict[str, Any] | None,
        config: RunnableConfig,
        views: Mapping[str, str],
        turn_id: str | None = None,
        *,
        revision: str | None = None,
    ) -> Command[Any]:
        """The allowed calls themselves, each with its grant and the view decided (checked
        again right before the tool runs), to the tools node; else back (``turn_id``: the
        decided turn they run once under, when another task decided them; ``revision``: the
        policy revision they were decided under, which the grants are bound to)."""
        if not allowed:
            return Command(update=update, goto=self.agent_node)
        before = fingerprint(earlier, ai_message)
        if self._stateless_sends:
            state, earlier = {}, ()
        elif isinstance(state, Mapping):
            state = {k: v for k, v in state.items() if k not in (TICKET_KEY, ROUTED_KEY)}
        sends = [
            Send(
                self.tools_node,
                calls_payload(
                    list(group),
                    state,
                    self.messages_key,
                    earlier,
                    ai_message,
                    config,
                    views=views,
                    stateless=self._stateless_sends,
                    bound=self._binding(config, revision),
                    turn_id=turn_id,
                    before=before,
                ),
            )
            for group in task_groups(allowed, config, ai_message.id, turn_id)
        ]
        return Command(update=update, goto=sends)

    def _stop_turn(
        self,
        turn: Turn,
        allowed: Sequence[ToolCall],
        pending: Sequence[Mapping[str, Any]],
        replies: list[Any],
    ) -> Command[Any]:
        """End the run: the model keeps proposing a call the policy keeps denying."""
        for call in [*allowed, *(cast(ToolCall, p["call"]) for p in pending)]:
            replies.append(turn_stopped_message(call))
        replies.append(run_stopped_message(self.turns.max_repeated_denials))
        return Command(update={self.messages_key: replies}, goto=END)

    # -- human approval ---------------------------------------------------------------

    def _binding(self, config: RunnableConfig, revision: str | None = None) -> dict[str, Any]:
        """What a hand-over is bound to; ``revision``: the policy revision its calls were
        decided under (a reload after the decision then voids it), else the one in force."""
        if revision is None:
            revision = engine_revision(self.engine)
        return binding(self._scope, config, revision)

    def _sent_back(self, state: Any, config: RunnableConfig) -> bool:
        """Whether ``state`` is one of this guard's hand-overs to itself (a turn waiting for
        approval, the edge's decisions) whose turn is no longer open in the conversation
        the graph holds: sent back into the run after the conversation went on, it is not
        acted on (see :mod:`.live_turn`). A turn waiting for approval whose model message is
        not a message object (its fields as JSON) was not delivered by LangGraph either."""
        if not isinstance(state, Mapping):
            return False
        ticket = state.get(TICKET_KEY)
        carried = state.get(ROUTED_KEY)
        if isinstance(ticket, Mapping):
            message = ticket.get("ai_message")
            if not isinstance(message, AIMessage):
                return True
            message_id, before = message.id, ticket.get("before")
            pending = (p.get("call") or {} for p in ticket.get("pending") or ())
            waiting = [*(ticket.get("allowed") or ()), *pending]
            contents = {
                str(c.get("id")): call_digest(c.get("name"), c.get("args")) for c in waiting
            }
        elif isinstance(carried, Mapping):
            message_id, before = carried.get("message_id"), carried.get("before")
            decided = carried.get("calls")
            contents = {
                str(item[0]): item[1]
                for item in (decided if isinstance(decided, list) else ())
                if isinstance(item, list) and len(item) == 2
            }
        else:
            return False
        return not turn_still_open(
            config, self.messages_key, message_id, contents, before=before, contents=contents
        )

    def _ticket_holds(self, ticket: Mapping[str, Any], config: RunnableConfig) -> bool:
        """A turn waiting for approval is taken when it is this guard's, for this thread,
        sealed (it waits as long as the reviewer takes: its calls are decided again)."""
        return mapping_sealed(TICKET_KEY, ticket) and binding_holds(
            ticket.get("binding"), config, {self._scope}, ttl=None
        )

    def _unsealed_ticket(self, ticket: Mapping[str, Any]) -> Command[Any]:
        """A turn waiting for approval that does not carry the guard's seal (forged, or
        sealed by another process): none of its calls runs; each is answered so that the
        model can propose it again."""
        message = ticket.get("ai_message")
        calls = message.tool_calls if isinstance(message, AIMessage) else []
        replies = [unsealed_call_message(call) for call in calls]
        update = {self.messages_key: replies} if replies else None
        return Command(update=update, goto=self.agent_node)

    def _after_review(
        self, state: Any, ticket: Mapping[str, Any], reviewed: Reviewed, config: RunnableConfig
    ) -> Command[Any]:
        replies = list(reviewed.replies)
        if reviewed.ai_message is not ticket["ai_message"]:
            replies.insert(0, reviewed.ai_message)
        update = {self.messages_key: replies} if replies else None
        earlier = state_messages(state, self.messages_key)[: ticket["ai_index"]]
        views = self.turns.views_of(reviewed.allowed, ticket.get("views"))
        return self._to_tools(
            state,
            earlier,
            reviewed.ai_message,
            reviewed.allowed,
            update,
            config,
            views,
            revision=reviewed.revision,
        )


def _ticket(state: Any) -> Mapping[str, Any] | None:
    if isinstance(state, Mapping):
        ticket = state.get(TICKET_KEY)
        if isinstance(ticket, Mapping):
            return ticket
    return None


def _with_messages(state: Any, key: str, messages: list[AnyMessage]) -> dict[str, Any]:
    if isinstance(state, Mapping):
        return {**state, key: messages}
    return {key: messages}


def _runtime_of(config: RunnableConfig) -> Runtime | None:
    """The runtime of the run ``config`` belongs to; ``None`` outside a run."""
    runtime = (config.get("configurable") or {}).get(CONFIG_KEY_RUNTIME)
    return runtime if isinstance(runtime, Runtime) else None
