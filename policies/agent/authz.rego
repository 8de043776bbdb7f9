# Authorization of LLM-proposed tool calls (input contract v1).
#
# Query data.agent.authz.decision. It is always defined:
#   allowed:          {"allow": true,  "reasons": []}
#   denied:           {"allow": false, "reasons": [<sorted deny reasons>]}
#                     (and "approvals": [<sorted approval reasons>] when some apply too)
#   needs a human:    {"allow": false, "require_approval": true, "reasons": [<sorted approval reasons>]}
#
# Every reason is an object {"code": <snake_case code>, "message": <text>}.
# Codes are stable identifiers for counting in traces and audits; messages are
# for people. Reasons sort by code, then message. Messages may name the tool,
# the role, argument field names, allowed values from data and the names of
# untrusted tools, but never echo argument values the model sent (they end up
# in traces and logs).
#
# Rules in this package add to three sets/rules:
#   allow     - the user's role may call the tool (data.agent.config.tool_roles,
#               and for MCP tools data.agent.config.mcp); only well-formed requests
#   deny      - reasons to refuse; any deny overrides allow and approval
#   approval  - reasons a human must approve first (only when nothing denies)
# Anything no rule allows is denied with a coded reason: a malformed request, a
# tool the role may not call (refusals), or default_deny.
#
# Cost: every rule of deny and approval is tried for every call, so the rules
# are shaped for the common call (well formed, allowed, outside every group
# below), whose answer `decision` gives first:
#   - `decision` tests allow's common rule (the role may call the tool by
#     tool_roles) written out on the input, rather than asking for allow: a rule
#     evaluation less on every decision; any other rule of allow (an MCP tool's)
#     is asked for by the next `else`;
#   - every rule of allow implies a well-formed request, so the general refusals
#     are looked for only when no rule allows, and they join a denied decision
#     beside deny (denials) rather than sitting in it: an allowed call never
#     enters their rule;
#   - rules that only concern some calls start with an expression OPA's rule
#     index reads: an equality on the call's own input ("egress": true, a tool
#     name) or a bare reference to a field the group needs (an MCP tool's server,
#     an "egress" object); a call outside the group never enters them (a bare
#     reference is indexed, is_string() is not);
#   - the information-flow rules need untrusted content read earlier; they are
#     gated the same way on what the call must be for them to have a reason
#     (authz_infoflow.rego), and scan input.history in the rule itself: cheaper
#     than a cached fact, both in OPA and in OPA-compiled WebAssembly, where a
#     turn's calls are decided with `with input.tool` and facts are not kept from
#     one call to the next. The common call scans the history once, for a
#     refused call;
#   - data is read in as few pieces as the common call allows: OPA keeps each
#     base document it reads for the rest of the decision, by its path, so the
#     customer-database rules read config.customer_db once, whole, rather than
#     making a store read per field (customer_db.rego).
# On benchmark 0's input (an allowed customer-database read, a 3-call turn, 4
# allowed reads in the history) `opa bench` counts 141 allocations per decision,
# against 165 before the earlier of these changes, 324 for the policy when the
# goal was set (benchmarks/baseline-policy) and 65 for a policy that allows
# everything (OPA's own per-query work); each read of data from the store costs
# about 4 to 25 of them (the first the most: OPA's cache of what it read makes an
# entry per path element not seen before), each rule evaluated about 4.
package agent.authz

import data.agent.config

default decision := {
	"allow": false,
	"reasons": [{
		"code": "default_deny",
		"message": "denied by default: no policy rule reached a decision",
	}],
}

# Allowed when nothing denies, nothing asks for approval and a rule allows (the
# common answer comes first: each further `else` costs an evaluation; the first
# two differ only in how they ask for allow, see "Cost" above). Otherwise
# a deny outranks approvals; they come along with it, so that a deny rule in shadow
# mode (the guard's rollout of a new rule) never lifts an approval that is enforced.
decision := {"allow": true, "reasons": []} if {
	# allow's common rule (below), written out: asking for allow would cost a rule
	# evaluation on every decision.
	input.version == 1
	role := input.user.role
	is_string(role)
	role != ""
	role in config.tool_roles[input.tool.name]
	deny == set()
	approval == set()
} else := {"allow": true, "reasons": []} if {
	allow
	deny == set()
	approval == set()
} else := object.union({"allow": false, "reasons": sort(denials)}, approvals_beside_deny) if {
	count(denials) > 0
} else := {"allow": false, "require_approval": true, "reasons": sort(approval)} if {
	count(approval) > 0
}

default approvals_beside_deny := {}

approvals_beside_deny := {"approvals": sort(approval)} if count(approval) > 0

# --- Request helpers -------------------------------------------------------

# The caller's role, when there is a usable one.
user_role := input.user.role if {
	is_string(input.user.role)
	input.user.role != ""
}

tool_name := input.tool.name if is_string(input.tool.name)

# The call is an MCP tool's (mcp.rego decides those): mcp_tool(input.tool),
# written out and computed once per decision. Rules of the MCP group start with
# a bare reference to input.tool.metadata.mcp.server themselves: OPA's rule index
# reads it (not is_string()) and leaves them out for any call without that field.
mcp_call if is_string(input.tool.metadata.mcp.server)

# The tool arguments; {} when the model sent something that is not an object.
default tool_args := {}

tool_args := input.tool.args if is_object(input.tool.args)

# --- Allow -----------------------------------------------------------------

# The common case, on the input itself (no helper rules): a request with a
# version-1 shape whose user's role may call the tool by tool_roles. Every rule
# of allow implies well_formed, so the general refusals below are not looked for
# once allow holds. (`decision` writes this rule out too: keep the two the same.)
allow if {
	input.version == 1
	role := input.user.role
	is_string(role)
	role != ""
	role in config.tool_roles[input.tool.name]
}

# --- Deny: malformed requests and default deny ------------------------------

# A request with a version-1 shape, a user with a role, and a tool name.
well_formed if {
	input.version == 1
	user_role
	tool_name
}

# What a denied decision lists: deny, and the general refusals of a call that no
# rule allows (a malformed request, or a tool the role may not call). They are
# kept out of deny: an allowed call, the common one, then never looks for them.
denials := deny | general_refusals

general_refusals := refusals if {
	not allow
} else := set()

refusals contains reason if {
	not well_formed
	some reason in malformed
}

malformed contains {
	"code": "unsupported_version",
	"message": "unsupported input version (this policy expects version 1)",
} if not input.version == 1

# (Helper rules keep "not" away from refs that may be undefined.)
has_user if is_object(input.user)

malformed contains {
	"code": "no_user",
	"message": "no user is attached to the request; tool calls need an authenticated user",
} if not has_user

malformed contains {
	"code": "no_role",
	"message": "the user has no role; tool calls need a user with a role",
} if {
	has_user
	not user_role
}

malformed contains {"code": "no_tool_name", "message": "the tool call has no name"} if not tool_name

# The role may call the tool by tool_roles, whatever the request's shape.
role_permits_tool if user_role in config.tool_roles[tool_name]

# MCP tools are decided by mcp.rego, whose reasons name the server.
refusals contains reason if {
	not mcp_call
	not role_permits_tool
	reason := not_allowed_reason
}

# Messages are built with concat, not sprintf: the regopy fallback (rego-cpp)
# mangles sprintf %s arguments that come from other builtins.
not_allowed_reason := {
	"code": "tool_not_permitted_for_role",
	"message": concat("", ["tool \"", tool_name, "\" is not permitted for role \"", user_role, "\""]),
} if {
	config.tool_roles[tool_name]
}

not_allowed_reason := {
	"code": "no_rule_for_tool",
	"message": concat("", ["no rule allows tool \"", tool_name, "\""]),
} if {
	not config.tool_roles[tool_name]
}

# --- Tool visibility -------------------------------------------------------

# The tools this subject may use at all: the guard's helpers filter the tool
# list bound to the model with it. Visibility is not enforcement: every call
# is still decided by `decision`.
visible_tools contains name if {
	some tool in input.tools
	not mcp_tool(tool)
	name := tool.name
	user_role in config.tool_roles[name]
}
