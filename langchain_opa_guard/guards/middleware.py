"""``OPAGuardMiddleware``: the guard for LangChain's ``create_agent``.

Each model turn is decided by the same :class:`~langchain_opa_guard.guards.turns.TurnDecider`
as the guard node's; the middleware keeps the policy's history beside the messages, and grants
the calls that may run (:mod:`langchain_opa_guard.guards.middleware_grants`).

Why one module: ``AgentMiddleware`` is one class whose hooks (``wrap_model_call``,
``after_model``, ``wrap_tool_call`` and their async twins) each act on the same turn; the
decision path, the grant check and tool visibility are in modules of their own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Container, Mapping, Sequence
from typing import Annotated, Any, Literal, cast

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import (
    AgentState,
    ExtendedModelResponse,
    PrivateStateAttr,
    hook_config,
)
from langchain_core.messages import AIMessage, RemoveMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.config import get_config
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from typing_extensions import NotRequired

from langchain_opa_guard.contract import (
    latest_request,
    state_messages,
    subject_from,
)
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.guards.arguments import check_choice
from langchain_opa_guard.guards.claims import arun_once, run_once
from langchain_opa_guard.guards.denials import (
    DenialStyle,
    run_stopped_message,
    turn_stopped_message,
)
from langchain_opa_guard.guards.kept_history import (
    bounded_history,
    kept_message_ids,
    merged_history,
    message_history,
)
from langchain_opa_guard.guards.live_turn import fingerprint_of, on_graph_conversation
from langchain_opa_guard.guards.middleware_grants import (
    GRANTS_KEY,
    CheckedTool,
    bound_request,
    checked_request,
    digest_of,
    granted_turn,
    grants,
    last_ai_message,
    no_tool_answer,
)
from langchain_opa_guard.guards.open_calls import kept_outcomes, repaired_messages
from langchain_opa_guard.guards.plain_messages import (
    content_without_calls,
    over_current,
    plain_message,
)
from langchain_opa_guard.guards.planning import Turn, deny_without_id
from langchain_opa_guard.guards.resume import Reviewed
from langchain_opa_guard.guards.seals import (
    GRANT_TTL,
    binding,
    binding_holds,
    decider_rules,
    engine_revision,
    guard_scope,
    mapping_sealed,
    seal_mapping,
)
from langchain_opa_guard.guards.tool_call_guard import ToolCallGuard
from langchain_opa_guard.guards.tool_results import applied_result
from langchain_opa_guard.guards.tool_start_check import arun_checked, run_checked
from langchain_opa_guard.guards.turns import Outcome, TurnDecider
from langchain_opa_guard.guards.visibility import (
    DEFAULT_VISIBILITY_PATH,
    avisible_tools,
    visible_tools,
)
from langchain_opa_guard.ops.decision_log import DecisionLog

__all__ = ["OPAGuardMiddleware"]

logger = logging.getLogger(__name__)

HISTORY_KEY = "opa_guard_history"
"""Private state: the policy's history entries of the turns decided so far, so a middleware
that summarises or trims the messages cannot erase what ran from ``input.history``."""

TURN_KEY = "opa_guard_turn"
"""Private state: the model turn the middleware decided, until ``after_model`` settles it."""

REQUEST_KEY = "opa_guard_request"
"""Private state: the user's request as the run began (``input.context.request``), so a
human message a middleware writes later (a summary of untrusted text) is never taken for it."""


class _GuardState(AgentState[Any]):
    opa_guard_history: NotRequired[Annotated[list[dict[str, Any]], PrivateStateAttr]]
    opa_guard_request: NotRequired[Annotated[str | None, PrivateStateAttr]]
    opa_guard_turn: NotRequired[Annotated[dict[str, Any] | None, PrivateStateAttr]]
    opa_guard_grants: NotRequired[Annotated[dict[str, Any] | None, PrivateStateAttr]]


class OPAGuardMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """An ``AgentMiddleware`` that lets a tool call run only when the policy allows it.

    Each model turn is decided as a whole, right after the model answers
    (``wrap_model_call``): every call's arguments go through the tool's own schema, then
    the policy decides them all. ``after_model`` then answers each denied call with a
    ``ToolMessage`` carrying the policy's reasons (the model re-plans; a denied
    ``return_direct`` tool does not end the run), and, when the policy asks for a human,
    pauses once for all of the turn's approvals before anything of the turn runs
    (``interrupt()`` with ``HumanInTheLoopMiddleware``'s request and answer shapes; needs a
    checkpointer). Only the calls allowed or approved for exactly their arguments get a
    grant, and ``wrap_tool_call`` runs a call only with its grant: checked again right
    before the tool runs, so an interceptor that changes a call after the decision is
    refused.

    **Where it goes:** first in ``middleware=[...]``. Its ``wrap_model_call`` is then the
    outermost (it decides the response the other middleware produced) and its
    ``after_model`` the last to run (it decides what ``HumanInTheLoopMiddleware`` or
    ``ToolCallLimitMiddleware`` left, and never answers a call they already answered). A
    call changed by any middleware after the decision is refused where the tool runs, never
    run unchecked; a call without a grant (added by another middleware) is decided where it
    runs, with approvals treated as denials.

    Each call's ``input.tool.metadata`` (and the history's) comes from ``registry`` where it
    names the tool, else from the agent's own tool (``tool.metadata``), so ``registry`` may be
    left out.

    A model that keeps proposing a call the policy keeps denying (the same call,
    ``max_repeated_denials`` times, 3 by default; ``None`` turns this off) ends the run: the
    turn's calls are answered unrun and the agent jumps to its end with a message saying why.

    With ``visibility=True`` the model is also bound only to the tools the policy's
    ``visible_tools`` lets the subject use; the call-time check stays, since visibility is
    not enforcement.

    Example:
        ```python
        from langchain.agents import create_agent
        from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware

        agent = create_agent(
            model,
            tools,
            middleware=[OPAGuardMiddleware(EmbeddedPolicy("policies"), registry=tools)],
        )
        agent.invoke({"messages": [("user", "Delete CUST-003")]},
                     context={"user": {"id": "user-789", "role": "guest"}})
        ```
    """

    state_schema = _GuardState  # type: ignore[assignment]

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        registry: Sequence[Any] | Mapping[str, Mapping[str, Any]] | None = None,
        denial_style: DenialStyle = "full",
        approvals: Literal["interrupt", "deny"] = "interrupt",
        fail_open: Collection[str] = (),
        shadow: bool | Collection[str] = False,
        decision_log: DecisionLog | None = None,
        max_repeated_denials: int | None = 3,
        user_key: str = "user",
        visibility: bool = False,
        visibility_path: str = DEFAULT_VISIBILITY_PATH,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__()
        check_choice(approvals, "approvals", ("interrupt", "deny"))
        options: dict[str, Any] = {
            "registry": registry,
            "denial_style": denial_style,
            "fail_open": fail_open,
            "shadow": shadow,
            "decision_log": decision_log,
            "user_key": user_key,
            "tracer_provider": tracer_provider,
            "meter_provider": meter_provider,
        }
        # The turn's decision path is the guard node's; only the wiring differs.
        self._turns = TurnDecider(
            engine,
            agent="model",
            tools="tools",
            approvals=approvals,
            max_repeated_denials=max_repeated_denials,
            **options,
        )
        self._fallback = TurnDecider(
            engine,
            agent="model",
            tools="tools",
            approvals="deny",
            max_repeated_denials=max_repeated_denials,
            **options,
        )
        self.guard = ToolCallGuard(engine, **options)
        self.engine = self._turns.engine
        self.visibility = visibility
        self.visibility_path = visibility_path
        self.user_key = user_key
        self._registered = frozenset(self._turns.metadata_of)
        # What this middleware hands on (grants, its decided turn) is bound to it.
        self._scope = guard_scope(
            self.engine, "OPAGuardMiddleware", rules=decider_rules(self._turns)
        )
        self._learned: dict[str, dict[str, Any]] = {}
        self._knows_every_tool = False

    # -- the model's turn: decided as the model answers --------------------------------

    # -- the run: the user's request as it began ---------------------------------------

    def before_agent(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Answer the calls earlier turns left open, then record the user's request (the
        latest human message as the run starts) and the calls the conversation holds.

        A run starts here only with new input: a resume goes on from its pending task, so a
        call still open now belongs to a turn cut off before its tools (LangGraph dropped
        its task). Each such call is answered as not run
        (:func:`~langchain_opa_guard.guards.open_calls.repaired_messages`), or as one that
        may have run where it started or the kept history records it as run (its answer was
        trimmed away), and the turn's decision and grants are dropped with it, so nothing of
        that turn runs afterwards."""
        messages = state_messages(state)
        update: dict[str, Any] = {}
        kept = _kept(state)
        repaired = repaired_messages(
            messages,
            _current_config(),
            kept_outcomes(messages, kept) if kept else None,
            self._waiting_answers(state),
        )
        if repaired is not None:
            update["messages"] = [RemoveMessage(id=REMOVE_ALL_MESSAGES), *repaired]
            messages = repaired
            if isinstance(state, Mapping) and (state.get(TURN_KEY) or state.get(GRANTS_KEY)):
                update[TURN_KEY] = update[GRANTS_KEY] = None
        request = latest_request(messages)
        if not (isinstance(state, Mapping) and state.get(REQUEST_KEY) == request):
            update[REQUEST_KEY] = request
        # Calls the conversation already holds (passed in, or from runs before this
        # middleware's) are kept too, before any middleware can summarize them away.
        current = message_history(messages, self._turns.metadata_of)
        merged = merged_history(kept, current, keep_unnamed=False)
        if merged != kept:
            update[HISTORY_KEY] = bounded_history(merged, self._known())
        return update or None

    async def abefore_agent(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return self.before_agent(state, runtime)

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> ModelResponse | ExtendedModelResponse:  # type: ignore[type-arg]
        self._learn(request.tools, every=True)
        request = self._visible(request)
        response = handler(request)
        planned = self._plan(request, response)
        if planned is None:
            return response
        turn, config = planned
        decided = self._turns.decide(turn, config)
        return self._decided(response, turn, self._turns.settle(turn, decided))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse | ExtendedModelResponse:  # type: ignore[type-arg]
        self._learn(request.tools, every=True)
        request = await self._avisible(request)
        response = await handler(request)
        planned = self._plan(request, response)
        if planned is None:
            return response
        turn, config = planned
        decided = await self._turns.adecide(turn, config)
        return self._decided(response, turn, self._turns.settle(turn, decided))

    def _plan(
        self, request: ModelRequest, response: ModelResponse
    ) -> tuple[Turn, RunnableConfig] | None:
        message = last_ai_message(response.result)
        if message is None:
            return None
        taken = {m.id for m in request.state["messages"] if getattr(m, "id", None)}
        taken |= kept_message_ids(_kept(request.state))
        if (message.id is None and message.tool_calls) or message.id in taken:
            # The decision is bound to the message by its id; and a reused id (some servers
            # repeat response ids) would make the state replace an earlier turn with this
            # one, erasing what that turn did from the history the policy reads, or make
            # its calls stand for a kept turn's (kept entries are matched by message id).
            named = message.model_copy(update={"id": f"lc_opa_guard-{uuid.uuid4().hex}"})
            response.result = [named if m is message else m for m in response.result]
            message = named
        if not message.tool_calls:
            return None
        named, unnamed = _with_call_ids(message)
        if unnamed:
            response.result = [named if m is message else m for m in response.result]
        # The whole response: a structured-output answer that follows the turn counts.
        state = {**dict(request.state), "messages": [*request.state["messages"], *response.result]}
        config = _current_config()
        turn = self._turns.plan(
            state, config, request.runtime, _kept(request.state), _request(request.state)
        )
        if turn is None:
            return None
        deny_without_id(turn, unnamed, self.engine.policy)
        return turn, config

    def _decided(self, response: ModelResponse, turn: Turn, out: Outcome) -> ExtendedModelResponse:  # type: ignore[type-arg]
        ticket = self._turns.ticket_for(turn, out)
        ticket["message_id"] = turn.ai_message.id
        ticket["answers"] = out.answers
        ticket["stop"] = out.stop
        ticket["tools"] = dict(self._learned)
        # A caller can write the agent state with a Command: only a sealed turn is taken.
        ticket["binding"] = self._bound(out.revision)
        ticket["seal"] = seal_mapping(TURN_KEY, ticket)
        result = [out.ai_message if m is turn.ai_message else m for m in response.result]
        return ExtendedModelResponse(
            model_response=ModelResponse(
                result=result, structured_response=response.structured_response
            ),
            command=Command(update={TURN_KEY: ticket}),
        )

    # -- after the model: answers, approvals, grants -----------------------------------

    @hook_config(can_jump_to=["end"])
    def after_model(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        self._recall(state)
        message, ticket = self._current(state)
        if message is None:
            return self._moved_on(state, runtime)
        config = _current_config()
        if ticket is None:
            turn = self._replan(state, message, config, runtime)
            if turn is None:
                return self._cleared(state)
            verdicts = self._fallback.decide(turn, config)
            return self._settled_fallback(state, message, self._fallback.settle(turn, verdicts))
        if ticket.get("stop"):
            return self._stopped(state, message, ticket["ai_message"], ticket)
        if not ticket["pending"]:
            reviewed = Reviewed(
                list(ticket["allowed"]), [], ticket["ai_message"], _bound_to(ticket)
            )
            return self._settled(state, message, ticket, reviewed)
        return self._settled(state, message, ticket, self._turns.review(ticket, config, runtime))

    @hook_config(can_jump_to=["end"])
    async def aafter_model(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        self._recall(state)
        message, ticket = self._current(state)
        if message is None:
            return self._moved_on(state, runtime)
        config = _current_config()
        if ticket is None:
            turn = self._replan(state, message, config, runtime)
            if turn is None:
                return self._cleared(state)
            verdicts = await self._fallback.adecide(turn, config)
            return self._settled_fallback(state, message, self._fallback.settle(turn, verdicts))
        if ticket.get("stop"):
            return self._stopped(state, message, ticket["ai_message"], ticket)
        if not ticket["pending"]:
            reviewed = Reviewed(
                list(ticket["allowed"]), [], ticket["ai_message"], _bound_to(ticket)
            )
            return self._settled(state, message, ticket, reviewed)
        reviewed = await self._turns.areview(ticket, config, runtime)
        return self._settled(state, message, ticket, reviewed)

    def _replan(
        self, state: Any, message: AIMessage, config: RunnableConfig, runtime: Runtime[Any]
    ) -> Turn | None:
        """The turn as it is now (changed after the decision, or never decided), decided
        again with approvals as denials; calls without an id are given one to be answered
        by (the message is written back with them)."""
        named, unnamed = _with_call_ids(message)
        if unnamed:
            messages = [named if m is message else m for m in state_messages(state)]
            state = {**dict(state), "messages": messages}
        turn = self._fallback.plan(state, config, runtime, _kept(state), _request(state))
        if turn is not None:
            deny_without_id(turn, unnamed, self.engine.policy)
        return turn

    def _current(self, state: Any) -> tuple[AIMessage | None, Mapping[str, Any] | None]:
        """The model's latest turn, and the middleware's decision of it if it still holds.

        The decision holds only for the message it was made on, with every call as it was
        decided (its id too): a middleware that changed the turn after the decision makes
        the guard decide it again (approvals then count as denials).
        """
        message = None
        for candidate in reversed(state_messages(state)):
            if isinstance(candidate, AIMessage):
                message = candidate
                break
            if not isinstance(candidate, ToolMessage):
                break
        if message is None or not message.tool_calls:
            return None, None
        ticket = state.get(TURN_KEY) if isinstance(state, Mapping) else None
        if not isinstance(ticket, Mapping) or ticket.get("message_id") != message.id:
            return message, None
        # Forged, sealed by another process or another guard, for another thread; a turn
        # that grants without a reviewer (nothing pending) only for a short while.
        ttl = None if ticket.get("pending") else GRANT_TTL
        if not self._holds(ticket, ttl):
            return message, None
        decided: AIMessage = ticket["ai_message"]
        if _as_decided(decided) != _as_decided(message):
            logger.warning("the model's turn changed after the policy decided it; deciding again")
            return message, None
        return message, ticket

    def _waiting_answers(self, state: Any) -> dict[tuple[str, str], ToolMessage] | None:
        """The answers a turn waiting for approval holds for its denied calls (written with
        the turn once the question is answered), by ``(message id, call id)``: a new message
        that leaves the question open keeps the policy's denials in the history."""
        ticket = state.get(TURN_KEY) if isinstance(state, Mapping) else None
        if not isinstance(ticket, Mapping) or not ticket.get("answers"):
            return None
        message_id = ticket.get("message_id")
        if not isinstance(message_id, str) or not self._holds(ticket, None):
            return None
        return {
            (message_id, answer.tool_call_id): answer
            for answer in ticket["answers"]
            if isinstance(answer, ToolMessage)
        }

    def _holds(self, ticket: Mapping[str, Any], ttl: float | None) -> bool:
        try:
            config: Mapping[str, Any] | None = _current_config()
        except RuntimeError:
            config = None
        # A turn that grants without a reviewer holds only under the policy in force.
        revision = engine_revision(self.engine) if ttl is not None else None
        return mapping_sealed(TURN_KEY, ticket) and binding_holds(
            ticket.get("binding"), config, {self._scope}, ttl, revision
        )

    def _moved_on(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """After the model, when the conversation no longer ends with its turn: a message
        written into a paused run (``Command(update=...)``, ``update_state`` then a resume)
        while the turn waited here. The turn is dropped as a new message drops it (its open
        calls answered by the repair of :meth:`before_agent`, so ``create_agent`` sends none
        of them to the tools), and its decision and grants with it. A conversation that
        ends with the model's answer (the end of every run) has nothing to repair."""
        messages = state_messages(state)
        if not messages or isinstance(messages[-1], AIMessage):
            return self._cleared(state)
        update = self.before_agent(state, runtime) or {}
        update.update(self._cleared(state) or {})
        return update or None

    def _cleared(self, state: Any) -> dict[str, Any] | None:
        if isinstance(state, Mapping) and (state.get(TURN_KEY) or state.get(GRANTS_KEY)):
            return {TURN_KEY: None, GRANTS_KEY: None}
        return None

    def _settled(
        self, state: Any, message: AIMessage, ticket: Mapping[str, Any], reviewed: Reviewed
    ) -> dict[str, Any]:
        updated = over_current(message, ticket["ai_message"], reviewed.ai_message)
        messages: list[Any] = [] if updated is ticket["ai_message"] else [updated]
        messages += _unanswered(state, [*ticket["answers"], *reviewed.replies])
        return {
            "messages": messages,
            HISTORY_KEY: self._recorded(state, updated, messages),
            TURN_KEY: None,
            GRANTS_KEY: grants(
                message.id,
                reviewed.allowed,
                _current_config(),
                self._turns.views_of(reviewed.allowed, ticket.get("views")),
                self._bound(reviewed.revision),
                fingerprint_of(state_messages(state), message.id),
            ),
        }

    def _bound(self, revision: str | None) -> dict[str, Any]:
        """What this middleware's turn or grants are bound to; ``revision``: the policy
        revision the calls were decided under (a reload after the decision voids them),
        else the one in force."""
        if revision is None:
            revision = engine_revision(self.engine)
        return binding(self._scope, _current_config(), revision)

    def _recorded(
        self, state: Any, message: AIMessage, answers: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """The kept history merged with the messages before this turn (their outcomes as
        the messages now show them), and this turn's calls added (allowed ones as pending)."""
        messages = state_messages(state)
        start = len(messages)
        while start > 0 and not isinstance(messages[start - 1], AIMessage):
            start -= 1
        # messages[start - 1] is this turn's model message, followed by its answers so far.
        replies = [m for m in [*messages[start:], *answers] if isinstance(m, ToolMessage)]
        metadata_of = self._turns.metadata_of
        earlier = message_history(messages[: max(start - 1, 0)], metadata_of)
        merged = merged_history(_kept(state), earlier, keep_unnamed=False)
        turn = message_history([message, *replies], metadata_of)
        return bounded_history([*merged, *turn], self._known())

    def _known(self) -> Container[str]:
        """The agent's tool names; every name until the guard has seen all the agent's
        tools (the model is first called after ``before_agent``; a registry may name only
        some), so bounding the kept history never merges the calls of tools it has yet to
        learn into one kind (an untrusted read among a harmless tool's calls)."""
        if not self._knows_every_tool:
            return _EVERY_NAME
        return set(self._turns.metadata_of) | set(self._turns.tools_by_name)

    def _stopped(
        self, state: Any, message: AIMessage, decided: AIMessage, ticket: Mapping[str, Any]
    ) -> dict[str, Any]:
        """End the run: the model keeps proposing a call the policy keeps denying. The
        turn's denials are given, every other call of it is answered unrun (no approval is
        asked for), and the agent jumps to its end."""
        messages: list[Any] = [] if decided is message else [decided]
        unrun = [*ticket["allowed"], *(p["call"] for p in ticket["pending"])]
        replies = [*ticket["answers"], *(turn_stopped_message(call) for call in unrun)]
        messages += _unanswered(state, replies)
        messages.append(run_stopped_message(self._turns.max_repeated_denials))
        return {
            "messages": messages,
            HISTORY_KEY: self._recorded(state, decided, messages),
            TURN_KEY: None,
            GRANTS_KEY: None,
            "jump_to": "end",
        }

    def _settled_fallback(self, state: Any, message: AIMessage, out: Outcome) -> dict[str, Any]:
        if out.stop:
            ticket = {"allowed": out.allowed, "pending": out.pending, "answers": out.answers}
            return self._stopped(state, message, out.ai_message, ticket)
        messages: list[Any] = [] if out.ai_message is message else [out.ai_message]
        messages += _unanswered(state, out.answers)
        return {
            "messages": messages,
            HISTORY_KEY: self._recorded(state, out.ai_message, messages),
            TURN_KEY: None,
            GRANTS_KEY: grants(
                message.id,
                out.allowed,
                _current_config(),
                out.views,
                self._bound(out.revision),
                fingerprint_of(state_messages(state), message.id),
            ),
        }

    # -- where the tool runs -----------------------------------------------------------

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        self._learn([request.tool, *(getattr(request.runtime, "tools", None) or ())])
        live = on_graph_conversation(request, "messages")
        if live is None:
            # The tools task's input sent back into the run after its turn left the
            # conversation (see live_turn): nothing of it runs, nothing is answered.
            return Command(update={})
        request = live
        if request.tool is None:  # nothing here to check what would run it
            return no_tool_answer(request)
        granted = checked_request(request, self._scope, engine_revision(self.engine))
        if granted is None:  # not part of the decided turn: decided here, on its own
            # (and checked where its tool runs, after the middleware inside this one)
            return self.guard.wrap_tool_call(
                request, lambda r: run_checked(handler, bound_request(r))
            )
        if isinstance(granted, ToolMessage):
            return granted
        result = run_once(
            granted, lambda r: run_checked(handler, r), granted_turn(granted, self._scope)
        )
        return applied_result(granted, result)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        self._learn([request.tool, *(getattr(request.runtime, "tools", None) or ())])
        live = on_graph_conversation(request, "messages")
        if live is None:
            return Command(update={})
        request = live
        if request.tool is None:
            return no_tool_answer(request)
        granted = checked_request(request, self._scope, engine_revision(self.engine))
        if granted is None:
            return await self.guard.awrap_tool_call(
                request, lambda r: arun_checked(handler, bound_request(r))
            )
        if isinstance(granted, ToolMessage):
            return granted
        result = await arun_once(
            granted, lambda r: arun_checked(handler, r), granted_turn(granted, self._scope)
        )
        return applied_result(granted, result)

    # -- visibility ------------------------------------------------------------------------

    def _visible(self, request: ModelRequest) -> ModelRequest:
        if not self.visibility:
            return request
        tools = visible_tools(
            cast(Any, self.engine),
            request.tools,
            user=self._subject(request),
            path=self.visibility_path,
        )
        return request.override(tools=tools)

    async def _avisible(self, request: ModelRequest) -> ModelRequest:
        if not self.visibility:
            return request
        tools = await avisible_tools(
            cast(Any, self.engine),
            request.tools,
            user=self._subject(request),
            path=self.visibility_path,
        )
        return request.override(tools=tools)

    def _subject(self, request: ModelRequest) -> Any:
        runtime = request.runtime
        context = getattr(runtime, "context", None)
        user = subject_from(context, {}, self.user_key)
        if user is None:
            try:
                user = subject_from(None, get_config(), self.user_key)
            except RuntimeError:
                user = None
        return user

    def _learn(self, tools: Sequence[Any], every: bool = False) -> None:
        """The agent's own tools (``every``: all of them, as the model is offered them):
        their schemas check arguments before the policy, and their ``metadata`` is
        ``input.tool.metadata`` (and the history's) for every tool the registry does not
        name (a registry entry wins)."""
        self._knows_every_tool = self._knows_every_tool or every
        for tool in tools:
            if isinstance(tool, CheckedTool):  # the agent's tool, checked where it runs
                tool = tool.inner
            if not isinstance(tool, BaseTool):
                continue
            self._turns.learn(tool)
            self._fallback.learn(tool)
            self.guard.tools_by_name.setdefault(tool.name, tool)
            self._know(tool.name, tool.metadata or {})

    def _recall(self, state: Any) -> None:
        """The metadata of the tools learned when the turn was decided, kept with its
        decision: after a restart the turn resumes here before the model is asked again."""
        ticket = state.get(TURN_KEY) if isinstance(state, Mapping) else None
        if not isinstance(ticket, Mapping) or not self._holds(ticket, None):
            return
        tools = ticket.get("tools")
        if isinstance(tools, Mapping):
            for name, metadata in tools.items():
                if isinstance(name, str) and isinstance(metadata, Mapping):
                    self._know(name, metadata)

    def _know(self, name: str, metadata: Mapping[str, Any]) -> None:
        if name in self._registered or name in self._learned:
            return
        learned = self._learned[name] = dict(metadata)
        for index in (
            self._turns.metadata_of,
            self._fallback.metadata_of,
            self.guard.metadata_of,
        ):
            index.setdefault(name, learned)


def _bound_to(ticket: Mapping[str, Any]) -> str | None:
    """The policy revision a decided turn's ticket is bound to (its decisions')."""
    bound = ticket.get("binding")
    revision = bound.get("revision") if isinstance(bound, Mapping) else None
    return revision if isinstance(revision, str) else None


def _request(state: Any) -> str | None:
    request = state.get(REQUEST_KEY) if isinstance(state, Mapping) else None
    return request if isinstance(request, str) else None


def _kept(state: Any) -> list[dict[str, Any]]:
    kept = state.get(HISTORY_KEY) if isinstance(state, Mapping) else None
    return list(kept) if isinstance(kept, list) else []


def _unanswered(state: Any, answers: Sequence[Any]) -> list[Any]:
    """``answers`` minus those for calls something else (another middleware, a human)
    already answered after the turn: every call id gets one answer."""
    answered: set[str] = set()
    for message in reversed(state_messages(state)):
        if isinstance(message, AIMessage):
            break
        if isinstance(message, ToolMessage):
            answered.add(message.tool_call_id)
    return [a for a in answers if getattr(a, "tool_call_id", None) not in answered]


def _as_decided(message: AIMessage) -> list[tuple[Any, str]]:
    return [(c.get("id"), digest_of(c)) for c in message.tool_calls]


def _with_call_ids(message: AIMessage) -> tuple[AIMessage, set[int]]:
    """``message`` with each call that has no usable id (none, empty, not text) given a
    fresh one, and where those calls are: every call gets exactly one answer, which names
    it (``create_agent`` routes a call whose id no answer carries to its tools)."""
    unnamed = {
        i
        for i, call in enumerate(message.tool_calls)
        if not isinstance(call.get("id"), str) or not call.get("id")
    }
    if not unnamed:
        return message, unnamed
    calls = [
        cast(ToolCall, {**call, "id": f"opa_guard_{uuid.uuid4().hex[:24]}"})
        if i in unnamed
        else call
        for i, call in enumerate(message.tool_calls)
    ]
    # A plain message (same id, so it replaces the model's): a streamed chunk, or the raw
    # provider calls in ``additional_kwargs``, would bring the missing ids back after a
    # checkpoint round trip.
    try:
        named = plain_message(message, calls, content_without_calls(message))
    except (ValueError, TypeError, KeyError):  # malformed calls: denied anyway
        named = message.model_copy(update={"tool_calls": calls})
    return named, unnamed


def _current_config() -> RunnableConfig:
    try:
        return get_config()
    except RuntimeError:  # outside a graph run
        return {}


class _EveryName:
    """A container holding every tool name."""

    def __contains__(self, name: object) -> bool:
        return True


_EVERY_NAME = _EveryName()
