# MCP tools: what their server, annotations and pinned definitions mean.
#
# An MCP tool's metadata (langchain_opa_guard.mcp_tools / with_mcp_metadata) holds
# the tool's annotations as MCP names them (title, readOnlyHint, destructiveHint,
# idempotentHint, openWorldHint) and
#   "mcp": {"server": <the client's name for the server>,
#           "tool": <the tool's MCP name>,
#           "digest": "sha256:<hex>"}   (of name, description, inputSchema, annotations)
#
# Data, data.agent.config.mcp:
#   servers[<server>] = {"roles": [...], "destructive_roles": [...],
#                        "tools": {<tool>: {"roles": [...], "destructive_roles": [...]}}}
#   pins[<server>][<tool>] = a digest, or a list of digests, that were reviewed
#
# Hints a tool leaves out take MCP's defaults: readOnlyHint false,
# destructiveHint true, openWorldHint true. The meanings:
#   - a tool of a server the data does not know is denied, annotated or not:
#     annotations from an unknown server are not to be trusted (mcp_unknown_server);
#   - a tool runs for the roles of its tool entry, else of its server; other
#     roles are denied (mcp_tool_not_permitted_for_role);
#   - a destructive tool (not read-only, destructiveHint not false) needs a
#     human's approval unless the role is in destructive_roles (mcp_destructive);
#   - an open-world tool's output is untrusted, like "trust": "untrusted", and an
#     open-world tool that is not read-only sends data out, like "egress": true
#     (the rules of exfiltration.rego then apply);
#   - a pinned tool whose digest is not a pinned one is denied
#     (mcp_definition_changed), and so is an unpinned tool of a server that has
#     pins (mcp_tool_not_pinned).
package agent.authz

import data.agent.config

# --- Reading a call's MCP metadata -------------------------------------------

mcp_tool(call) if is_string(call.metadata.mcp.server)

mcp_server(call) := call.metadata.mcp.server if mcp_tool(call)

# The tool's MCP name (the call's name may carry the client's server prefix).
mcp_name(call) := name if {
	mcp_tool(call)
	name := object.get(call.metadata.mcp, "tool", call.name)
	is_string(name)
}

mcp_server_config(call) := config.mcp.servers[mcp_server(call)]

mcp_tool_config(call) := object.get(object.get(mcp_server_config(call), "tools", {}), mcp_name(call), {})

# A tool entry's setting, else the server's.
mcp_setting(call, key) := object.get(mcp_tool_config(call), key, object.get(mcp_server_config(call), key, []))

mcp_role_permitted(call) if user_role in mcp_setting(call, "roles")

mcp_read_only(call) if call.metadata.readOnlyHint == true

mcp_destructive(call) if {
	mcp_tool(call)
	not mcp_read_only(call)
	not call.metadata.destructiveHint == false
}

mcp_open_world(call) if {
	mcp_tool(call)
	not call.metadata.openWorldHint == false
}

# --- Allow, unknown servers and roles -----------------------------------------

# (well_formed: every rule of allow implies it, see authz.rego; a malformed
# request is denied with its refusals.)
# (The bare reference first: OPA's rule index then leaves this rule out for a
# call without an MCP server.)
allow if {
	input.tool.metadata.mcp.server
	mcp_call
	well_formed
	mcp_role_permitted(input.tool)
}

# The denials and approvals of an MCP tool's call: the ones below, and those of
# exfiltration.rego (an open-world MCP tool that is not read-only sends data
# out). The first expression, a bare reference to the call's MCP server, is one
# OPA's rule index reads (is_string() is not; the second expression is mcp_call
# written out): a call without an MCP server never enters these rules.
deny contains reason if {
	input.tool.metadata.mcp.server
	is_string(input.tool.metadata.mcp.server)
	some reason in mcp_deny
}

approval contains reason if {
	input.tool.metadata.mcp.server
	is_string(input.tool.metadata.mcp.server)
	some reason in mcp_approval
}

mcp_deny contains reason if some reason in egress_deny

mcp_approval contains reason if some reason in egress_approval

mcp_deny contains {"code": "mcp_unknown_server", "message": message} if {
	mcp_call
	not mcp_server_config(input.tool)
	message := concat("", [
		"MCP tool \"", tool_name, "\" comes from server \"", mcp_server(input.tool),
		"\", which the policy does not know; tools of unknown servers are denied, annotated or not",
	])
}

mcp_deny contains {"code": "mcp_tool_not_permitted_for_role", "message": message} if {
	mcp_server_config(input.tool)
	not mcp_role_permitted(input.tool)
	message := concat("", [
		"MCP tool \"", mcp_name(input.tool), "\" of server \"", mcp_server(input.tool),
		"\" is not permitted for role \"", user_role, "\"",
	])
}

# --- Destructive tools ----------------------------------------------------------

mcp_destructive_allowed(call) if user_role in mcp_setting(call, "destructive_roles")

destructive_hint_text(call) := "destructiveHint is true" if call.metadata.destructiveHint == true

destructive_hint_text(call) := "no destructiveHint, and MCP's default is true" if {
	not call.metadata.destructiveHint == true
	not call.metadata.destructiveHint == false
}

mcp_approval contains {"code": "mcp_destructive", "message": message} if {
	mcp_call
	mcp_destructive(input.tool)
	mcp_role_permitted(input.tool)
	not mcp_destructive_allowed(input.tool)
	message := concat("", [
		"MCP tool \"", mcp_name(input.tool), "\" of server \"", mcp_server(input.tool),
		"\" may change or delete data (", destructive_hint_text(input.tool),
		"); a human must approve",
	])
}

# --- Open world: untrusted output, data sent out -------------------------------

untrusted_output(call) if mcp_open_world(call)

sends_data_out(call) if {
	mcp_open_world(call)
	not mcp_read_only(call)
}

# --- Pinned definitions ----------------------------------------------------------

mcp_pin(call) := config.mcp.pins[mcp_server(call)][mcp_name(call)]

mcp_pinned_digests(call) := {mcp_pin(call)} if is_string(mcp_pin(call))

mcp_pinned_digests(call) := {digest | some digest in mcp_pin(call)} if is_array(mcp_pin(call))

mcp_definition_changed(call) if {
	pinned := mcp_pinned_digests(call)
	not object.get(call.metadata.mcp, "digest", "") in pinned
}

mcp_tool_unpinned(call) if {
	is_object(config.mcp.pins[mcp_server(call)])
	not mcp_pin(call)
}

mcp_deny contains {"code": "mcp_definition_changed", "message": message} if {
	mcp_definition_changed(input.tool)
	message := concat("", [
		"MCP tool \"", mcp_name(input.tool), "\" of server \"", mcp_server(input.tool),
		"\" changed since it was pinned (its definition digest is not a reviewed one); ",
		"review the new definition and pin it again",
	])
}

mcp_deny contains {"code": "mcp_tool_not_pinned", "message": message} if {
	mcp_tool_unpinned(input.tool)
	message := concat("", [
		"MCP tool \"", mcp_name(input.tool), "\" of server \"", mcp_server(input.tool),
		"\" is not pinned, while the server's other tools are; review it and pin it",
	])
}

# --- Tool visibility -------------------------------------------------------------

visible_tools contains tool.name if {
	some tool in input.tools
	is_string(tool.name)
	mcp_role_permitted(tool)
	not mcp_definition_changed(tool)
	not mcp_tool_unpinned(tool)
}
