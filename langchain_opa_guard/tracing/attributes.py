"""Span and metric attribute names, in one place (and the attributes an MCP tool adds).

GenAI names follow the OpenTelemetry GenAI semantic conventions (development status); the
``gen_ai.security.*`` names mirror the open ``run_guardrail`` proposal; ``opa.*`` names mirror
the fields of OPA's decision log; ``langgraph.*`` name the graph position.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_opa_guard.contract import MCP_METADATA_KEY

# -- GenAI semantic conventions ----------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_DESCRIPTION = "gen_ai.tool.description"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_DATA_SOURCE_ID = "gen_ai.data_source.id"
ERROR_TYPE = "error.type"

# Operation names.
OP_INVOKE_AGENT = "invoke_agent"
OP_INVOKE_WORKFLOW = "invoke_workflow"
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_EXECUTE_TOOL = "execute_tool"
OP_RETRIEVAL = "retrieval"
OP_RUN_GUARDRAIL = "run_guardrail"

# -- run_guardrail proposal ----------------------------------------------------------------
SECURITY_TARGET_TYPE = "gen_ai.security.target.type"
SECURITY_TARGET_ID = "gen_ai.security.target.id"
SECURITY_VERDICT_TYPE = "gen_ai.security.verdict.type"
SECURITY_VERDICT_REASON = "gen_ai.security.verdict.reason"
SECURITY_VERDICT_CODE = "gen_ai.security.verdict.code"
SECURITY_ACTION_TYPE = "gen_ai.security.action.type"
SECURITY_GUARDRAIL_NAME = "gen_ai.security.guardrail.name"
SECURITY_GUARDRAIL_PROVIDER = "gen_ai.security.guardrail.provider.name"
SECURITY_POLICY_ID = "gen_ai.security.policy.id"
SECURITY_CONTENT_INPUT_HASH = "gen_ai.security.content.input.hash"

# -- OPA decision (mirrors OPA's decision log) ---------------------------------------------
OPA_DECISION_ALLOW = "opa.decision.allow"
OPA_DECISION_VERDICT = "opa.decision.verdict"
OPA_DECISION_ID = "opa.decision_id"
OPA_DECISION_REASONS = "opa.decision.reasons"
OPA_DECISION_REASON_COUNT = "opa.decision.reason_count"
OPA_DECISION_REASON_CODES = "opa.decision.reason_codes"
OPA_POLICY_PATH = "opa.policy.path"
OPA_ENGINE = "opa.engine"
OPA_INPUT_HASH = "opa.input.hash"
OPA_DECISION_FAIL_OPEN = "opa.decision.fail_open"
OPA_DECISION_SHADOW = "opa.decision.shadow"
OPA_DECISION_WOULD = "opa.decision.would"
OPA_POLICY_REVISION = "opa.policy.revision"
OPA_ARGS_REWRITTEN = "opa.args.rewritten"
OPA_ARGS_PROPOSED_HASH = "opa.args.proposed.hash"
OPA_ARGS_EXECUTED_HASH = "opa.args.executed.hash"

# -- MCP (the tool's server and definition, from its metadata) ------------------------------
MCP_SERVER_NAME = "mcp.server.name"
MCP_TOOL_DIGEST = "mcp.tool.definition.digest"

# -- LangGraph position ------------------------------------------------------------------
LANGGRAPH_NODE = "langgraph.node"
LANGGRAPH_STEP = "langgraph.step"
LANGGRAPH_INTERRUPTED = "langgraph.interrupted"
LANGCHAIN_RUN_ID = "langchain.run.id"
LANGCHAIN_RUN_TYPE = "langchain.run.type"

# -- Metrics -------------------------------------------------------------------------------
METRIC_DECISIONS = "opa.guard.decisions"
METRIC_DECISION_DURATION = "opa.guard.decision.duration"
METRIC_EXECUTE_TOOL_DURATION = "gen_ai.execute_tool.duration"
METRIC_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"

INSTRUMENTATION_NAME = "langchain_opa_guard"


def mcp_span_attributes(metadata: Any) -> dict[str, str]:
    """Span attributes for a tool whose metadata is ``metadata``: the MCP server and digest."""
    if not isinstance(metadata, Mapping):
        return {}
    info = metadata.get(MCP_METADATA_KEY)
    if not isinstance(info, Mapping):
        return {}
    attributes: dict[str, str] = {}
    if isinstance(info.get("server"), str):
        attributes[MCP_SERVER_NAME] = info["server"]
    if isinstance(info.get("digest"), str):
        attributes[MCP_TOOL_DIGEST] = info["digest"]
    return attributes
