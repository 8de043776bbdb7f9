"""A scripted chat model for demos and tests: it replays tool calls instead of calling an LLM.

The reply to a conversation is chosen by how many model turns have happened since the last
human message, so every new question starts the script again and a shared model instance
gives the same answers in every run.

Example:
    ```python
    from langchain_core.messages import AIMessage
    from langchain_opa_guard.testing import ScriptedChatModel, tool_call

    model = ScriptedChatModel(script=[
        AIMessage("", tool_calls=[tool_call("delete_customer", {"customer_id": "CUST-3"})]),
        "Done.",
    ])
    ```
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

__all__ = ["ScriptedChatModel", "tool_call", "summarize_tool_results"]

_ids = itertools.count(1)

ScriptStep = AIMessage | str | Callable[[Sequence[BaseMessage]], AIMessage]


def tool_call(name: str, args: dict[str, Any], call_id: str | None = None) -> ToolCall:
    """A tool call as a model would propose it."""
    return ToolCall(name=name, args=args, id=call_id or f"call_{next(_ids)}", type="tool_call")


def summarize_tool_results(messages: Sequence[BaseMessage]) -> AIMessage:
    """A final answer that reports what the tools of the last turn said."""
    results = []
    for message in reversed(messages):
        if not isinstance(message, ToolMessage):
            break
        record = message.artifact.get("opa_guard") if isinstance(message.artifact, dict) else None
        if record:
            reasons = "; ".join(record.get("reasons") or []) or "no reason given"
            results.append(f"I could not run {message.name}: {reasons}.")
        else:
            results.append(f"{message.name}: {message.content}")
    return AIMessage("\n".join(reversed(results)) or "Nothing to report.")


class ScriptedChatModel(BaseChatModel):
    """A chat model that answers from a script, one step per model turn.

    Each step is an ``AIMessage`` (usually with ``tool_calls``), a string (a final
    answer), or a function of the conversation. Past the end of the script the model
    answers with ``summarize_tool_results``.
    """

    script: list[Any]
    model_name: str = "scripted-model"

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        """Tools are already in the script; binding changes nothing."""
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = 0
        for message in reversed(messages):
            if isinstance(message, HumanMessage):
                break
            if isinstance(message, AIMessage):
                turn += 1
        step: Any = self.script[turn] if turn < len(self.script) else summarize_tool_results
        if callable(step):
            reply = step(messages)
        elif isinstance(step, str):
            reply = AIMessage(step)
        else:
            reply = step
        prompt_tokens = sum(len(str(m.content)) for m in messages) // 4 + 1
        completion_tokens = len(str(reply.content)) // 4 + 1
        reply = reply.model_copy(
            update={
                "usage_metadata": {
                    "input_tokens": prompt_tokens,
                    "output_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "response_metadata": {"model_name": self.model_name},
            }
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])
