package agent.authz_test

import data.agent.authz

# --- The five reference scenarios ------------------------------------------

test_scenario_1_admin_updates_status_allowed if {
	tool := call("update_customer_status", {"customer_id": "CUST-001", "new_status": "active"}, "c1", db_meta)
	authz.decision == allowed with input as request(admin_user, tool)
}

test_scenario_2_internal_user_updates_status_denied if {
	tool := call("update_customer_status", {"customer_id": "CUST-002", "new_status": "pending"}, "c1", db_meta)
	authz.decision == denied([reason("tool_not_permitted_for_role", "tool \"update_customer_status\" is not permitted for role \"internal_user\"")]) with input as request(internal_user, tool)
}

test_scenario_3_internal_user_reads_name_allowed if {
	tool := call("get_customer_details", {"customer_id": "CUST-001", "fields": {"name": true}}, "c1", db_meta)
	authz.decision == allowed with input as request(internal_user, tool)
}

test_scenario_4_internal_user_reads_email_denied if {
	tool := call("get_customer_details", {"customer_id": "CUST-001", "fields": {"name": true, "email": true}}, "c1", db_meta)
	authz.decision == denied([reason("pii_fields_for_role", "role \"internal_user\" may not read PII fields: email")]) with input as request(internal_user, tool)
}

test_scenario_5_guest_deletes_customer_denied if {
	tool := call("delete_customer", {"customer_id": "CUST-003"}, "c1", db_meta)
	authz.decision == denied([reason("tool_not_permitted_for_role", "tool \"delete_customer\" is not permitted for role \"guest\"")]) with input as request(guest_user, tool)
}

# --- Default deny ------------------------------------------------------------

test_unknown_tool_denied if {
	tool := call("drop_tables", {}, "c1", {})
	authz.decision == denied([reason("no_rule_for_tool", "no rule allows tool \"drop_tables\"")]) with input as request(admin_user, tool)
}

test_unknown_role_denied if {
	tool := call("fetch_url", {"url": "https://example.com"}, "c1", untrusted_meta)
	user := {"id": "user-1", "role": "superuser"}
	authz.decision == denied([reason("tool_not_permitted_for_role", "tool \"fetch_url\" is not permitted for role \"superuser\"")]) with input as request(user, tool)
}

test_default_decision_when_no_rule_decides if {
	tool := call("fetch_url", {}, "c1", untrusted_meta)

	# (decision writes allow's common rule out, on config.tool_roles: emptied here.)
	d := authz.decision with input as request(admin_user, tool)
		with data.agent.config.tool_roles as {}
		with authz.allow as false
		with authz.denials as set()
	d == denied([reason("default_deny", "denied by default: no policy rule reached a decision")])
}

# --- Missing or malformed request parts --------------------------------------

test_null_user_denied if {
	tool := call("fetch_url", {}, "c1", untrusted_meta)
	authz.decision == denied([reason("no_user", "no user is attached to the request; tool calls need an authenticated user")]) with input as request(null, tool)
}

test_absent_user_denied if {
	tool := call("fetch_url", {}, "c1", untrusted_meta)
	req := object.remove(request(null, tool), ["user"])
	authz.decision == denied([reason("no_user", "no user is attached to the request; tool calls need an authenticated user")]) with input as req
}

test_user_without_role_denied if {
	tool := call("fetch_url", {}, "c1", untrusted_meta)
	authz.decision == denied([reason("no_role", "the user has no role; tool calls need a user with a role")]) with input as request({"id": "user-1"}, tool)
}

test_user_with_empty_role_denied if {
	tool := call("fetch_url", {}, "c1", untrusted_meta)
	authz.decision == denied([reason("no_role", "the user has no role; tool calls need a user with a role")]) with input as request({"id": "user-1", "role": ""}, tool)
}

test_missing_user_and_unknown_tool_gives_both_reasons if {
	tool := call("drop_tables", {}, "c1", {})
	authz.decision == denied([
		reason("no_rule_for_tool", "no rule allows tool \"drop_tables\""),
		reason("no_user", "no user is attached to the request; tool calls need an authenticated user"),
	]) with input as request(null, tool)
}

test_tool_without_name_denied if {
	tool := {"args": {}, "call_id": "c1", "metadata": {}}
	authz.decision == denied([reason("no_tool_name", "the tool call has no name")]) with input as request(admin_user, tool)
}

test_wrong_input_version_denied if {
	tool := call("fetch_url", {}, "c1", untrusted_meta)
	req := object.union(request(admin_user, tool), {"version": 2})
	authz.decision == denied([reason("unsupported_version", "unsupported input version (this policy expects version 1)")]) with input as req
}

test_missing_input_version_denied if {
	tool := call("fetch_url", {}, "c1", untrusted_meta)
	req := object.remove(request(admin_user, tool), ["version"])
	authz.decision == denied([reason("unsupported_version", "unsupported input version (this policy expects version 1)")]) with input as req
}

test_decision_defined_for_empty_input if {
	d := authz.decision with input as {}
	d.allow == false
	codes_of(d) == ["no_tool_name", "no_user", "unsupported_version"]
}

test_allowed_decision_shape_has_no_approval_key if {
	tool := call("search_web", {"query": "opa"}, "c1", untrusted_meta)
	d := authz.decision with input as request(internal_user, tool)
	object.keys(d) == {"allow", "reasons"}
	d.allow == true
}

# --- Coded reasons ------------------------------------------------------------

# One request per kind of reason. Argument values carry the marker "CANARY",
# which must never reach a message (messages end up in traces and logs).
canary_requests := [
	request(admin_user, call("update_customer_status", {"customer_id": "CANARY", "new_status": "CANARY"}, "c1", db_meta)),
	request(admin_user, call("update_customer_status", {"customer_id": "CANARY", "new_status": 7}, "c1", db_meta)),
	request(internal_user, call("get_customer_details", {"customer_id": "CANARY", "fields": {"CANARY": true, "email": true}}, "c1", db_meta)),
	request(internal_user, call("get_customer_details", {"customer_id": "CANARY"}, "c1", db_meta)),
	request(guest_user, call("delete_customer", {"customer_id": "CANARY"}, "c1", {"toolkit": "CANARY"})),
	request(admin_user, call("drop_tables", {"CANARY": "CANARY"}, "c1", {})),
	request(null, {"args": {"CANARY": "CANARY"}, "call_id": "c1"}),
	request({"id": "CANARY"}, call("fetch_url", {"url": "https://CANARY.test"}, "c1", untrusted_meta)),
	object.union(request(admin_user, call("fetch_url", {"url": "CANARY"}, "c1", untrusted_meta)), {"version": "CANARY"}),
	request_with(internal_user, email_to("CANARY@example.com"), [fetch, email_to("CANARY@example.com")], fetched_before),
	request_with(internal_user, email_to("CANARY@evil.test"), [fetch, email_to("CANARY@evil.test")], fetched_before),
]

documented_codes := {
	"default_deny", "egress_after_untrusted", "egress_in_untrusted_turn", "egress_outside_domains",
	"invalid_status", "no_role", "no_rule_for_tool", "no_tool_name", "no_user",
	"pii_fields_for_role", "status_missing", "tool_not_permitted_for_role",
	"unsupported_version", "wrong_toolkit",
}

test_reasons_are_coded_objects_without_argument_values if {
	every req in canary_requests {
		d := authz.decision with input as req
		count(d.reasons) > 0
		every r in d.reasons {
			object.keys(r) == {"code", "message"}
			regex.match(`^[a-z]+(_[a-z]+)*$`, r.code)
			r.code in documented_codes
			is_string(r.message)
			r.message != ""
			not contains(r.message, "CANARY")
		}
	}
}

test_canary_requests_reach_every_code_but_the_default if {
	seen := {code |
		some req in canary_requests
		some code in codes_of(authz.decision) with input as req
	}
	seen == documented_codes - {"default_deny"}
}

# By message the order would be "no rule ...", "the user ...", "unsupported ...".
test_reasons_sort_by_code if {
	tool := call("drop_tables", {}, "c1", {})
	req := object.union(request({"id": "user-1"}, tool), {"version": 2})
	codes_of(authz.decision) == ["no_role", "no_rule_for_tool", "unsupported_version"] with input as req
}

test_visible_tools_follow_the_roles if {
	local := [{"name": n, "metadata": {}} | some n in [
		"fetch_url", "search_web", "send_email", "http_post",
		"get_customer_details", "update_customer_status", "delete_customer",
	]]
	authz.visible_tools == {"fetch_url", "search_web"} with input as {"user": {"id": "g", "role": "guest"}, "tools": local}
	authz.visible_tools == {
		"fetch_url", "search_web", "send_email", "http_post", "get_customer_details",
	} with input as {"user": {"id": "i", "role": "internal_user"}, "tools": local}
	count(authz.visible_tools) == 7 with input as {"user": {"id": "a", "role": "admin"}, "tools": local}
	count(authz.visible_tools) == 0 with input as {"user": null, "tools": local}
}

# A tool from an MCP server is shown by the MCP rules alone, even under a local tool's name.
test_visible_tools_do_not_lend_a_local_name_to_an_mcp_tool if {
	tools := [{"name": "fetch_url", "metadata": {"mcp": {"server": "unknown", "tool": "fetch_url", "digest": "x"}}}]
	count(authz.visible_tools) == 0 with input as {"user": {"id": "a", "role": "admin"}, "tools": tools}
}
