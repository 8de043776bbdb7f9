package agent.authz_test

import data.agent.authz

# MCP metadata as langchain_opa_guard.mcp_tools stamps it.
mcp_meta(server, tool, annotations) := object.union(annotations, {"mcp": {
	"server": server,
	"tool": tool,
	"digest": concat("", ["sha256:", tool, "-v1"]),
}})

read_only := {"title": "Read a ticket", "readOnlyHint": true, "openWorldHint": false}

additive := {"readOnlyHint": false, "destructiveHint": false, "openWorldHint": false}

destructive := {"readOnlyHint": false, "destructiveHint": true, "idempotentHint": true, "openWorldHint": false}

open_world_read := {"readOnlyHint": true, "openWorldHint": true}

open_world_write := {"readOnlyHint": false, "destructiveHint": false, "openWorldHint": true}

get_ticket := call("get_ticket", {"ticket_id": "T-1"}, "c-get", mcp_meta("tickets", "get_ticket", read_only))

add_comment := call("add_comment", {"ticket_id": "T-1", "text": "hi"}, "c-add", mcp_meta("tickets", "add_comment", additive))

delete_ticket := call("delete_ticket", {"ticket_id": "T-1"}, "c-del", mcp_meta("tickets", "delete_ticket", destructive))

export_tickets := call("export_tickets", {}, "c-exp", mcp_meta("tickets", "export_tickets", {}))

fetch_page := call("fetch_page", {"url": "https://partner.test"}, "c-page", mcp_meta("web", "fetch_page", open_world_read))

mcp_email(to) := call("send_email", {"to": to, "subject": "s", "body": "b"}, "c-send", mcp_meta("web", "send_email", open_world_write))

# --- Known servers and roles ------------------------------------------------------

test_mcp_read_only_tool_allowed_for_server_roles if {
	authz.decision == allowed with input as request(internal_user, get_ticket)
	authz.decision == allowed with input as request(admin_user, get_ticket)
}

test_mcp_additive_tool_needs_no_approval if {
	authz.decision == allowed with input as request(internal_user, add_comment)
}

test_mcp_role_outside_server_roles_denied if {
	d := authz.decision with input as request(guest_user, get_ticket)
	d.allow == false
	reason("mcp_tool_not_permitted_for_role", "MCP tool \"get_ticket\" of server \"tickets\" is not permitted for role \"guest\"") in d.reasons
}

test_mcp_tool_entry_roles_override_server_roles if {
	authz.decision == allowed with input as request(guest_user, fetch_page)
	d := authz.decision with input as request(guest_user, mcp_email("bob@example.com"))
	"mcp_tool_not_permitted_for_role" in codes_of(d)
	authz.decision == allowed with input as request(internal_user, mcp_email("bob@example.com"))
}

test_mcp_prefixed_name_uses_the_mcp_name if {
	tool := call("tickets_get_ticket", {"ticket_id": "T-1"}, "c-get", mcp_meta("tickets", "get_ticket", read_only))
	authz.decision == allowed with input as request(internal_user, tool)
}

# --- destructiveHint ----------------------------------------------------------------

test_mcp_destructive_tool_needs_approval if {
	authz.decision == needs_approval([reason("mcp_destructive", "MCP tool \"delete_ticket\" of server \"tickets\" may change or delete data (destructiveHint is true); a human must approve")]) with input as request(internal_user, delete_ticket)
}

test_mcp_destructive_tool_allowed_for_destructive_roles if {
	authz.decision == allowed with input as request(admin_user, delete_ticket)
}

test_mcp_destructive_roles_per_tool if {
	servers := {"tickets": {"roles": ["internal_user"], "tools": {"delete_ticket": {"destructive_roles": ["internal_user"]}}}}
	authz.decision == allowed with input as request(internal_user, delete_ticket) with data.agent.config.mcp.servers as servers
	d := authz.decision with input as request(internal_user, export_tickets) with data.agent.config.mcp.servers as servers
	codes_of(d) == ["mcp_destructive"]
}

test_mcp_unannotated_tool_of_a_known_server_is_destructive_by_default if {
	authz.decision == needs_approval([reason("mcp_destructive", "MCP tool \"export_tickets\" of server \"tickets\" may change or delete data (no destructiveHint, and MCP's default is true); a human must approve")]) with input as request(internal_user, export_tickets)
}

test_mcp_denied_role_gets_no_approval_request if {
	d := authz.decision with input as request(guest_user, delete_ticket)
	d.allow == false
	not d.require_approval
}

# --- Unknown servers ------------------------------------------------------------------

test_mcp_unannotated_tool_of_an_unknown_server_denied if {
	tool := call("export_tickets", {}, "c-exp", mcp_meta("scratch", "export_tickets", {}))
	d := authz.decision with input as request(admin_user, tool)
	d.allow == false
	reason("mcp_unknown_server", "MCP tool \"export_tickets\" comes from server \"scratch\", which the policy does not know; tools of unknown servers are denied, annotated or not") in d.reasons
}

test_mcp_annotations_of_an_unknown_server_are_not_trusted if {
	tool := call("get_ticket", {"ticket_id": "T-1"}, "c-get", mcp_meta("scratch", "get_ticket", read_only))
	d := authz.decision with input as request(admin_user, tool)
	d.allow == false
	"mcp_unknown_server" in codes_of(d)
}

test_mcp_tool_cannot_borrow_a_local_tools_rule if {
	# fetch_url is allowed for guests by tool_roles; an MCP tool of that name from an
	# unknown server is still denied.
	tool := call("fetch_url", {"url": "https://x.test"}, "c-f", mcp_meta("scratch", "fetch_url", open_world_read))
	d := authz.decision with input as request(guest_user, tool)
	codes_of(d) == ["mcp_unknown_server"]
}

test_mcp_without_server_config_denies_every_mcp_tool if {
	d := authz.decision with input as request(admin_user, get_ticket) with data.agent.config.mcp as {}
	"mcp_unknown_server" in codes_of(d)
}

# --- openWorldHint: untrusted output, egress ---------------------------------------------

test_mcp_open_world_output_taints_like_untrusted if {
	history := [object.union(fetch_page, {"decision": "allow", "reasons": [], "status": "success"})]
	tool := mcp_email("bob@example.com")
	authz.decision == needs_approval([reason("egress_after_untrusted", "\"send_email\" sends data out after untrusted content was read (fetch_page); a human must approve")]) with input as request_with(internal_user, tool, [tool], history)
}

test_mcp_open_world_output_then_egress_outside_domains_denied if {
	history := [object.union(fetch_page, {"decision": "allow", "reasons": [], "status": "success"})]
	tool := mcp_email("eve@evil.test")
	d := authz.decision with input as request_with(internal_user, tool, [tool], history)
	d.allow == false
	"egress_outside_domains" in codes_of(d)
}

test_mcp_open_world_in_the_same_turn_taints if {
	tool := mcp_email("bob@example.com")
	d := authz.decision with input as request_with(internal_user, tool, [fetch_page, tool], [])
	codes_of(d) == ["egress_in_untrusted_turn"]
	d.require_approval
}

test_mcp_closed_world_output_does_not_taint if {
	history := [object.union(get_ticket, {"decision": "allow", "reasons": [], "status": "success"})]
	tool := mcp_email("bob@example.com")
	authz.decision == allowed with input as request_with(internal_user, tool, [tool], history)
}

test_mcp_unannotated_output_is_open_world_by_default if {
	history := [object.union(export_tickets, {"decision": "approval", "reasons": [], "status": "success"})]
	tool := mcp_email("bob@example.com")
	d := authz.decision with input as request_with(internal_user, tool, [tool], history)
	codes_of(d) == ["egress_after_untrusted"]
}

test_mcp_open_world_tool_output_taints_a_local_egress_tool if {
	history := [object.union(fetch_page, {"decision": "allow", "reasons": [], "status": "success"})]
	tool := email_to("bob@example.com")
	d := authz.decision with input as request_with(internal_user, tool, [tool], history)
	codes_of(d) == ["egress_after_untrusted"]
}

test_mcp_open_world_read_is_not_egress if {
	history := [object.union(fetch_page, {"decision": "allow", "reasons": [], "status": "success"})]
	authz.decision == allowed with input as request_with(internal_user, fetch_page, [fetch_page], history)
}

test_mcp_denied_open_world_call_does_not_taint if {
	history := [object.union(fetch_page, {"decision": "deny", "reasons": [], "status": "error"})]
	tool := mcp_email("bob@example.com")
	authz.decision == allowed with input as request_with(internal_user, tool, [tool], history)
}

# --- Pinned definitions --------------------------------------------------------------------

pins := {"tickets": {
	"get_ticket": "sha256:get_ticket-v1",
	"delete_ticket": ["sha256:delete_ticket-v0", "sha256:delete_ticket-v1"],
}}

test_mcp_pinned_digest_allowed if {
	authz.decision == allowed with input as request(internal_user, get_ticket) with data.agent.config.mcp.pins as pins
	authz.decision == allowed with input as request(admin_user, delete_ticket) with data.agent.config.mcp.pins as pins
}

test_mcp_changed_definition_denied if {
	changed := json.patch(get_ticket, [{"op": "replace", "path": "/metadata/mcp/digest", "value": "sha256:get_ticket-v2"}])
	authz.decision == denied([reason("mcp_definition_changed", "MCP tool \"get_ticket\" of server \"tickets\" changed since it was pinned (its definition digest is not a reviewed one); review the new definition and pin it again")]) with input as request(internal_user, changed) with data.agent.config.mcp.pins as pins
}

test_mcp_changed_definition_denied_even_for_destructive_roles if {
	changed := json.patch(delete_ticket, [{"op": "replace", "path": "/metadata/mcp/digest", "value": "sha256:delete_ticket-v9"}])
	d := authz.decision with input as request(admin_user, changed) with data.agent.config.mcp.pins as pins
	codes_of(d) == ["mcp_definition_changed"]
}

test_mcp_missing_digest_of_a_pinned_tool_denied if {
	tool := json.patch(get_ticket, [{"op": "remove", "path": "/metadata/mcp/digest"}])
	d := authz.decision with input as request(internal_user, tool) with data.agent.config.mcp.pins as pins
	codes_of(d) == ["mcp_definition_changed"]
}

test_mcp_unpinned_tool_of_a_pinned_server_denied if {
	authz.decision == denied([reason("mcp_tool_not_pinned", "MCP tool \"add_comment\" of server \"tickets\" is not pinned, while the server's other tools are; review it and pin it")]) with input as request(internal_user, add_comment) with data.agent.config.mcp.pins as pins
}

test_mcp_server_without_pins_is_not_checked if {
	authz.decision == allowed with input as request(guest_user, fetch_page) with data.agent.config.mcp.pins as pins
}

# --- Tool visibility ------------------------------------------------------------------------

listing := [
{"name": t.name, "metadata": t.metadata} |
	some t in [get_ticket, add_comment, delete_ticket, export_tickets, fetch_page, mcp_email("x")]
]

visibility_input(user, tools) := {"version": 1, "user": user, "context": {}, "tools": tools}

test_mcp_visible_tools_by_role if {
	guest := authz.visible_tools with input as visibility_input(guest_user, listing)
	{"fetch_page", "get_ticket"} & guest == {"fetch_page"}
	seen_internal := authz.visible_tools with input as visibility_input(internal_user, listing)
	every name in ["get_ticket", "add_comment", "delete_ticket", "export_tickets", "fetch_page", "send_email"] {
		name in seen_internal
	}
}

test_mcp_visible_tools_hide_unknown_servers_and_changed_pins if {
	stranger := {"name": "scratch_tool", "metadata": mcp_meta("scratch", "scratch_tool", read_only)}
	changed := {"name": "get_ticket", "metadata": json.patch(get_ticket.metadata, [{"op": "replace", "path": "/mcp/digest", "value": "sha256:other"}])}
	visible := authz.visible_tools with input as visibility_input(admin_user, [stranger, changed, add_comment]) with data.agent.config.mcp.pins as pins
	not "scratch_tool" in visible
	not "get_ticket" in visible
	not "add_comment" in visible
	visible_unpinned := authz.visible_tools with input as visibility_input(admin_user, [changed, add_comment])
	"get_ticket" in visible_unpinned
	"add_comment" in visible_unpinned
}
