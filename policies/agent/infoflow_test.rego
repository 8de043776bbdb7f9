package agent.infoflow_test

import data.agent.authz
import data.agent.infoflow

# --- Fixtures -----------------------------------------------------------------

reader := {"read_only": true, "trust": "untrusted"}

internal_reader := {"read_only": true, "trust": "internal"}

personal_reader := {"read_only": true, "personal_data": true}

mailer := {"egress": {"destinations": ["to", "cc"], "content": ["subject", "body"]}}

inviter := {"egress": {"destinations": ["email"], "addressee": "person"}}

eraser := {"destructive": true}

# An earlier call as input.history holds it.
ran(name, args, metadata) := {
	"name": name, "args": args, "call_id": concat("-", ["h", name]), "metadata": metadata,
	"decision": "allow", "reasons": [], "status": "success",
}

refused(name, metadata) := object.union(ran(name, {}, metadata), {"decision": "deny", "status": "error"})

fetched := ran("fetch", {"url": "https://pages.test/a"}, reader)

# A v1 input for `tool` after `history`, with the user's request and a directory.
req(tool_name, args, metadata, history, request, directory) := {
	"version": 1,
	"tool": {"name": tool_name, "args": args, "call_id": "c1", "metadata": metadata},
	"user": {"id": "u1", "role": "internal_user"},
	"context": {"thread_id": "t1", "request": request, "directory": directory},
	"turn": [{"name": tool_name, "args": args, "call_id": "c1", "metadata": metadata}],
	"history": history,
}

mail(to, history, request) := req("mailer", {"to": to, "subject": "s", "body": "b"}, mailer, history, request, [])

codes(reasons) := {r.code | some r in reasons}

# --- Taint ---------------------------------------------------------------------

test_no_taint_without_untrusted_reads if {
	history := [ran("lookup", {}, {"read_only": true}), ran("chat", {}, internal_reader)]
	count(infoflow.approval) == 0 with input as mail("stranger@elsewhere.test", history, "hello")
}

test_denied_untrusted_read_does_not_taint if {
	history := [object.union(fetched, {"decision": "deny"})]
	count(infoflow.approval) == 0 with input as mail("stranger@elsewhere.test", history, "hello")
}

test_untrusted_call_in_the_same_turn_does_not_taint if {
	doc := mail("stranger@elsewhere.test", [], "hello")
	turn := array.concat(doc.turn, [{"name": "fetch", "args": {}, "call_id": "c0", "metadata": reader}])
	count(infoflow.approval) == 0 with input as object.union(doc, {"turn": turn})
}

test_pending_untrusted_call_taints if {
	pending := object.union(fetched, {"decision": null, "status": "pending"})
	codes(infoflow.approval) == {"destination_not_requested"} with input as mail("stranger@elsewhere.test", [pending], "hi")
}

# --- destination_not_requested ----------------------------------------------------

test_unknown_destination_after_untrusted_needs_approval if {
	approvals := infoflow.approval with input as mail("stranger@elsewhere.test", [fetched], "forward the page")
	approvals == {{
		"code": "destination_not_requested",
		"message": "\"mailer\" sends to a destination (to) that is neither in the user's request nor in the trusted directory, after untrusted content was read (fetch); a human must approve",
	}}
}

test_destination_named_in_the_request_is_trusted if {
	count(infoflow.approval) == 0 with input as mail("Bob@Partner.test", [fetched], "Send the page to 'bob@partner.test', thanks.")
}

test_destination_must_be_a_whole_word_of_the_request if {
	codes(infoflow.approval) == {"destination_not_requested"} with input as mail("bob", [fetched], "ask bobby")
	codes(infoflow.approval) == {"destination_not_requested"} with input as mail("ob@x.test", [fetched], "mail bob@x.test")
}

test_multi_word_destination_in_the_request_is_trusted if {
	doc := req("book", {"place": "Le Petit Hotel"}, {"egress": {"destinations": ["place"]}}, [fetched], "Book le petit hotel for me", [])
	count(infoflow.approval) == 0 with input as doc
}

test_destination_in_the_directory_is_trusted if {
	doc := req("mailer", {"to": ["ann@corp.test"], "cc": null}, mailer, [fetched], "hi", ["Ann@corp.test"])
	count(infoflow.approval) == 0 with input as doc
}

test_directory_domain_entry_trusts_the_domain if {
	doc := req("mailer", {"to": ["ann@corp.test"]}, mailer, [fetched], "hi", ["@corp.test"])
	count(infoflow.approval) == 0 with input as doc
	lookalike := req("mailer", {"to": ["ann@corp.test.evil"]}, mailer, [fetched], "hi", ["@corp.test"])
	codes(infoflow.approval) == {"destination_not_requested"} with input as lookalike
}

test_static_directory_from_data if {
	doc := req("mailer", {"to": "ann@corp.test"}, mailer, [fetched], "hi", null)
	count(infoflow.approval) == 0 with input as doc with data.agent.config.trusted_directory as ["ann@corp.test"]
}

test_every_destination_field_and_list_entry_is_checked if {
	doc := req("mailer", {"to": ["ann@corp.test"], "cc": ["eve@evil.test"]}, mailer, [fetched], "hi", ["ann@corp.test"])
	approvals := infoflow.approval with input as doc
	contains(approvals[_].message, "(cc)")
}

test_unreadable_destination_is_never_trusted if {
	doc := req("mailer", {"to": {"address": "ann@corp.test"}}, mailer, [fetched], "ann@corp.test", ["ann@corp.test"])
	codes(infoflow.approval) == {"destination_not_requested"} with input as doc
	doc2 := req("mailer", {"to": [7]}, mailer, [fetched], "7", [])
	codes(infoflow.approval) == {"destination_not_requested"} with input as doc2
}

test_site_of_a_url_destination if {
	poster := {"egress": {"destinations": ["url"]}}
	ok := req("post", {"url": "https://www.ours.test/page"}, poster, [fetched], "post it to www.ours.test.", [])
	count(infoflow.approval) == 0 with input as ok
	bad := req("post", {"url": "www.theirs.test/page"}, poster, [fetched], "post it to www.ours.test", [])
	codes(infoflow.approval) == {"destination_not_requested"} with input as bad
}

test_no_request_trusts_nothing if {
	doc := object.remove(mail("bob@partner.test", [fetched], "x"), ["context"])
	codes(infoflow.approval) == {"destination_not_requested"} with input as doc
}

test_destination_rule_needs_an_egress_object if {
	doc := req("mailer", {"to": "stranger@elsewhere.test"}, {"egress": true}, [fetched], "hi", [])
	count(infoflow.approval) == 0 with input as doc
}

# --- resolved_for_named_addressee ---------------------------------------------------

test_address_looked_up_for_a_named_person_from_a_named_source if {
	page := ran("fetch", {"url": "www.dana.test"}, reader)
	doc := req("invite", {"person": "Dana", "email": "dana@mail.test"}, inviter, [page], "Invite Dana; her address is on www.dana.test", [])
	count(infoflow.approval) == 0 with input as doc
}

test_address_for_a_person_the_user_did_not_name if {
	page := ran("fetch", {"url": "www.dana.test"}, reader)
	doc := req("invite", {"person": "Mallory", "email": "m@evil.test"}, inviter, [page], "Invite Dana; her address is on www.dana.test", [])
	codes(infoflow.approval) == {"destination_not_requested"} with input as doc
}

test_address_for_a_named_person_from_a_source_the_user_did_not_name if {
	page := ran("fetch", {"url": "www.other.test"}, reader)
	doc := req("invite", {"person": "Dana", "email": "dana@mail.test"}, inviter, [page], "Invite Dana", [])
	codes(infoflow.approval) == {"destination_not_requested"} with input as doc
}

# --- link_not_requested -----------------------------------------------------------

test_link_to_an_unknown_site_after_untrusted_is_denied if {
	doc := req("mailer", {"to": "ann@corp.test", "body": "see https://bit.example/x now"}, mailer, [fetched], "mail ann@corp.test", [])
	infoflow.deny == {{
		"code": "link_not_requested",
		"message": "\"mailer\" would send a link to a site that is neither in the user's request nor in the trusted directory, after untrusted content was read (fetch)",
	}} with input as doc
}

test_www_link_without_scheme_is_found if {
	doc := req("mailer", {"to": "ann@corp.test", "body": "Visit www.phish.test."}, mailer, [fetched], "mail ann@corp.test", [])
	codes(infoflow.deny) == {"link_not_requested"} with input as doc
}

test_link_to_a_requested_site_is_allowed if {
	doc := req("mailer", {"to": "ann@corp.test", "body": "the page https://www.ours.test/a."}, mailer, [fetched], "mail ann@corp.test the page on www.ours.test", [])
	count(infoflow.deny) == 0 with input as doc
}

test_links_in_list_content_are_found if {
	doc := req("mailer", {"to": "ann@corp.test", "body": ["hi", "www.phish.test"]}, mailer, [fetched], "mail ann@corp.test", [])
	codes(infoflow.deny) == {"link_not_requested"} with input as doc
}

test_links_are_fine_before_untrusted_content if {
	doc := req("mailer", {"to": "ann@corp.test", "body": "www.phish.test"}, mailer, [], "mail ann@corp.test", [])
	count(infoflow.deny) == 0 with input as doc
}

test_email_addresses_in_content_are_not_links if {
	doc := req("mailer", {"to": "ann@corp.test", "body": "write to bob@mail.example.test"}, mailer, [fetched], "mail ann@corp.test", [])
	count(infoflow.deny) == 0 with input as doc
}

# --- destructive_after_untrusted ----------------------------------------------------

test_destructive_after_untrusted_needs_approval if {
	doc := req("erase", {"id": "13"}, eraser, [fetched], "erase item 13", [])
	infoflow.approval == {{
		"code": "destructive_after_untrusted",
		"message": "\"erase\" deletes data or changes account settings after untrusted content was read (fetch); a human must approve",
	}} with input as doc
}

test_destructive_before_untrusted_is_not_held if {
	count(infoflow.approval) == 0 with input as req("erase", {"id": "13"}, eraser, [], "erase 13", [])
}

# --- personal_data_after_untrusted ----------------------------------------------------

test_egress_after_personal_data_and_untrusted_needs_approval if {
	history := [ran("profile", {}, personal_reader), fetched]
	doc := mail("wife@home.test", history, "send it to wife@home.test")
	infoflow.approval == {{
		"code": "personal_data_after_untrusted",
		"message": "\"mailer\" sends data out after both personal data (profile) and untrusted content (fetch) were read; a human must approve",
	}} with input as doc
}

test_coarse_egress_counts_for_personal_data if {
	history := [ran("profile", {}, personal_reader), fetched]
	doc := req("upload", {}, {"egress": true}, history, "", [])
	codes(infoflow.approval) == {"personal_data_after_untrusted"} with input as doc
}

test_personal_data_without_untrusted_content_is_not_held if {
	doc := mail("wife@home.test", [ran("profile", {}, personal_reader)], "send it to wife@home.test")
	count(infoflow.approval) == 0 with input as doc
}

# --- action_after_refusal ---------------------------------------------------------------

test_actions_after_a_refused_call_need_approval if {
	history := [fetched, refused("mailer", mailer)]
	doc := req("note", {"text": "x"}, {}, history, "", [])
	infoflow.approval == {{
		"code": "action_after_refusal",
		"message": "\"note\" comes after a refused call (mailer) in a conversation that read untrusted content (fetch); every further action needs a human",
	}} with input as doc
}

test_reads_after_a_refused_call_are_not_held if {
	history := [fetched, refused("mailer", mailer)]
	count(infoflow.approval) == 0 with input as req("lookup", {}, {"read_only": true}, history, "", [])
}

test_refusal_before_untrusted_content_does_not_count if {
	history := [refused("mailer", mailer), fetched]
	count(infoflow.approval) == 0 with input as req("note", {"text": "x"}, {}, history, "", [])
}

test_refused_read_does_not_count if {
	history := [fetched, refused("lookup", {"read_only": true})]
	count(infoflow.approval) == 0 with input as req("note", {"text": "x"}, {}, history, "", [])
}

# --- write_after_untrusted (optional) ------------------------------------------------------

test_strict_setting_holds_every_write_after_untrusted if {
	doc := req("note", {"text": "x"}, {}, [fetched], "", [])
	count(infoflow.approval) == 0 with input as doc
	codes(infoflow.approval) == {"write_after_untrusted"} with input as doc
		with data.agent.config.infoflow.approve_writes_after_untrusted as true
	count(infoflow.approval) == 0 with input as req("lookup", {}, {"read_only": true}, [fetched], "", [])
		with data.agent.config.infoflow.approve_writes_after_untrusted as true
}

# --- Combined with the decision --------------------------------------------------------------

# The customer-database policy permits fetch_url and send_email for internal users.
test_decision_asks_for_approval if {
	doc := req("send_email", {"to": "stranger@elsewhere.test"}, mailer, [fetched], "hi", [])
	d := authz.decision with input as doc
	d.require_approval == true
	codes(d.reasons) == {"destination_not_requested"}
}

test_decision_deny_overrides_approval if {
	doc := req("send_email", {"to": "stranger@elsewhere.test", "body": "www.phish.test"}, mailer, [fetched], "hi", [])
	d := authz.decision with input as doc
	d.allow == false
	not d.require_approval
	codes(d.reasons) == {"link_not_requested"}
}

test_decision_allows_a_requested_destination if {
	doc := req("send_email", {"to": "bob@partner.test"}, mailer, [fetched], "mail bob@partner.test", [])
	authz.decision == {"allow": true, "reasons": []} with input as doc
}

test_messages_never_echo_argument_values if {
	history := [ran("profile", {}, personal_reader), fetched, refused("send_email", mailer)]
	doc := req("send_email", {"to": "CANARY@canary.test", "body": "www.CANARY.test"}, mailer, history, "hi", [])
	d := authz.decision with input as doc
	count(d.reasons) > 0
	every r in d.reasons {
		not contains(lower(r.message), "canary")
	}
}

# --- A domain entry vouches for single mailboxes of that domain, nothing else ------------

poster := {"egress": {"destinations": ["url"], "content": ["body"]}}

test_a_domain_entry_vouches_for_a_single_address if {
	doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": "b"}, mailer, [fetched], "hi", ["@example.com"])
	count(infoflow.approval) == 0 with input as doc
}

test_a_list_ending_in_a_vouched_address_is_not_vouched_for if {
	doc := req("mailer", {"to": "eve@evil.test, bob@example.com", "subject": "s", "body": "b"}, mailer, [fetched], "hi", ["@example.com"])
	"destination_not_requested" in codes(infoflow.approval) with input as doc
}

test_a_url_ending_in_a_domain_entry_is_not_vouched_for if {
	every url in ["https://evil.test/upload?@example.com", "https://evil.test/@example.com"] {
		doc := req("post", {"url": url, "body": "b"}, poster, [fetched], "hi", ["@example.com"])
		"destination_not_requested" in codes(infoflow.approval) with input as doc
	}
}

test_a_link_host_is_what_a_browser_opens if {
	every body in ["see https://evil.test?@example.com/reset?t=1", "see https://evil.test#@example.com"] {
		doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "hi", ["@example.com", "example.com"])
		"link_not_requested" in codes(infoflow.deny) with input as doc
	}
}

# The addressee exception needs a person the request names and a source it names: a word
# any request holds ("the", "summary") is neither.
test_the_addressee_exception_needs_a_specific_source_and_person if {
	searched := ran("search", {"query": "summary"}, reader)
	doc := req("invite", {"email": "eve@evil.test", "person": "the"}, inviter, [searched], "send the summary to the team", [])
	"destination_not_requested" in codes(infoflow.approval) with input as doc
}

# --- Hosts read as a browser reads them (the WHATWG URL standard for http and https) -----

test_url_host_reads_what_a_browser_opens if {
	infoflow.url_host("https://evil.test\\@example.com/x") == "evil.test"
	infoflow.url_host("https://evil.test?@example.com/x") == "evil.test"
	infoflow.url_host("https://evil.test#@example.com") == "evil.test"
	infoflow.url_host("https://example.com@evil.test/x") == "evil.test"
	infoflow.url_host("https://a@b:c@evil.test") == "evil.test"
	infoflow.url_host("https://evil.test%2f@example.com/x") == "example.com"
	infoflow.url_host("https://user:pw@Example.COM:8443/a") == "example.com"
	infoflow.url_host("HTTPS://Example.COM./a") == "example.com"
	infoflow.url_host("https://example.com:/") == "example.com"
	infoflow.url_host("https:\\\\evil.test\\x") == "evil.test"
	infoflow.url_host("https:/\\/evil.test") == "evil.test"
	infoflow.url_host("https:evil.test") == "evil.test"
	infoflow.url_host("//evil.test/x") == "evil.test"
	infoflow.url_host("www.example.com/page") == "www.example.com"
	infoflow.url_host("xn--bcher-kva.test/b") == "xn--bcher-kva.test"
	infoflow.url_host("https://10.0.0.255:8080/") == "10.0.0.255"
	infoflow.url_host("https://1.example/") == "1.example"
}

test_url_host_drops_tabs_newlines_and_surrounding_space if {
	infoflow.url_host(" \thttps://exa\tm\nple.com/x\r\n") == "example.com"
	infoflow.url_host("ht\ttps://evil.test\n@example.com/") == "example.com"
	infoflow.url_host("https://evil.test\t/@example.com") == "evil.test"
}

test_url_host_decodes_escapes_of_name_characters if {
	infoflow.url_host("https://ex%61mple.com/") == "example.com"
	infoflow.url_host("https://EX%41MPLE%2ecom/") == "example.com"
	infoflow.url_host("https://example%2Ecom.%65vil.test/") == "example.com.evil.test"
}

# A host that is no plain DNS name has no reading: nobody vouches for it.
test_url_host_reads_nothing_else if {
	every url in [
		"https://[::1]/x", "https://exa%25mple.com/", "https://exa%2fmple.com/", "https://example.com%/",
		"https://ex%6", "https://lİnk.test/", "https://\uff45xample.com/", "https://example\u3002com/",
		"https://example.com:8o/", "https://exa mple.com/", "https://example.com../", "https://.example.com/",
		"https:///", "https://localhost/", "ftp://example.com/", "https://0x7f.1/", "https://example.1/",
		"https://1.2.3.04/", "https://1.2.3.256/", "https://example.0x/",
	] {
		not infoflow.url_host(url)
	}
}

test_site_is_read_from_urls_only if {
	infoflow.site("evil.test\\@example.com") == "evil.test"
	infoflow.site("https://example.com@evil.test") == "evil.test"
	infoflow.site("https://Example.com:8443") == "example.com"
	not infoflow.site("bob@example.com")
	not infoflow.site("example.com")
}

test_a_backslash_url_is_a_destination_at_its_real_host if {
	every url in ["https://evil.test\\@example.com/upload", "evil.test\\@example.com/upload", "https:\\\\evil.test\\@example.com"] {
		doc := req("post", {"url": url, "body": "b"}, poster, [fetched], "hi", ["example.com"])
		"destination_not_requested" in codes(infoflow.approval) with input as doc
	}
	ok := req("post", {"url": "https://example.com\\upload", "body": "b"}, poster, [fetched], "hi", ["example.com"])
	count(infoflow.approval) == 0 with input as ok
}

test_an_address_with_a_backslash_is_not_vouched_for_by_its_domain if {
	doc := req("mailer", {"to": "evil.test\\@example.com", "subject": "s", "body": "b"}, mailer, [fetched], "hi", ["@example.com"])
	"destination_not_requested" in codes(infoflow.approval) with input as doc
}

test_a_backslash_link_is_a_link_to_its_real_host if {
	every body in [
		"Reset: https://evil.test\\@example.com/reset?t=1",
		"Reset: HTTPS://EVIL.TEST\\@example.com/reset",
		"Reset: https:\\\\evil.test\\reset",
		"Reset: https:evil.test/reset",
		"<a href='https://example.com\"@evil.test/reset'>example.com</a>",
		"[example.com](https://example.com)@evil.test/x)",
	] {
		doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com", ["example.com"])
		"link_not_requested" in codes(infoflow.deny) with input as doc
	}
}

test_a_link_whose_host_goes_on_is_unreadable if {
	every body in [
		"https://example.com(x).evil.test/reset",
		"https://example.com,x.evil.test/reset",
		"https://example.com\u3002evil.test/reset",
		"https://example.com\uff0ecom/reset",
		"https://exa%25mple.com/reset",
		"https://[::1]/reset",
	] {
		doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com", ["example.com"])
		"link_not_requested" in codes(infoflow.deny) with input as doc
	}
}

test_links_in_brackets_quotes_and_prose_are_read if {
	every body in [
		"See [https://example.com](https://example.com).",
		"(see https://example.com), or <https://Example.com:443/a>; \"www.example.com\"",
		"Links start with http: or https: and use www. as a name.",
		"Mail ann@corp.test, visit https://user@example.com/x",
		"https://ex%61mple.com/ and https://example.com./",
	] {
		doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com", ["example.com", "www.example.com"])
		count(infoflow.deny) == 0 with input as doc
	}
}

test_a_link_carried_in_a_trusted_link_is_read_too if {
	doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": "https://example.com/go?to=https://evil.test/x"}, mailer, [fetched], "mail bob@example.com", ["example.com"])
	"link_not_requested" in codes(infoflow.deny) with input as doc
}

# Links are searched run by run (text without whitespace); a run holding more link starts
# than any URL does is a link that cannot be read (so the search stays linear).
test_a_run_with_too_many_link_starts_is_unreadable if {
	crowded := concat("", [concat("", array.concat(["https://example.com/"], ["http:!" | some _ in numbers.range(1, 65)])), " bye"])
	doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": crowded}, mailer, [fetched], "mail bob@example.com", ["example.com"])
	"link_not_requested" in codes(infoflow.deny) with input as doc
	infoflow.unreadable_links == {"a run of text with too many link starts"} with input as doc
}

test_a_run_with_a_few_link_starts_is_read if {
	body := concat("", ["see https://example.com/a", concat("", ["http:!" | some _ in numbers.range(1, 20)]), " and //example.com/b"])
	doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com", ["example.com"])
	infoflow.unreadable_links == set() with input as doc
	infoflow.link_sites == {"example.com"} with input as doc
	count(infoflow.deny) == 0 with input as doc
}

test_content_in_too_many_strings_is_not_read if {
	many := [sprintf("%d", [i]) | some i in numbers.range(1, 501)]
	doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": many}, mailer, [fetched], "mail bob@example.com", [])
	infoflow.unreadable_links == {"content in too many strings to read"} with input as doc
	"link_not_requested" in codes(infoflow.deny) with input as doc
	fewer := [sprintf("%d", [i]) | some i in numbers.range(1, 400)]
	doc2 := req("mailer", {"to": "bob@example.com", "subject": "s", "body": fewer}, mailer, [fetched], "mail bob@example.com", [])
	count(infoflow.deny) == 0 with input as doc2
}

test_content_with_too_many_link_starts_is_not_read_link_by_link if {
	body := concat(" ", [sprintf("//h%d.example.com", [i]) | some i in numbers.range(1, 513)])
	doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com", ["example.com"])
	infoflow.unreadable_links == {"content with too many link starts to read"} with input as doc
	infoflow.link_sites == set() with input as doc
	"link_not_requested" in codes(infoflow.deny) with input as doc
}

test_links_are_found_in_each_run if {
	body := "a //evil.test b\n(https://x.example.com)\t<//evil2.test> http://evil3.test,done"
	doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com", ["example.com"])
	infoflow.link_sites == {"evil.test", "x.example.com", "evil2.test", "evil3.test"} with input as doc
}

# --- A requested name is matched whole: not a prefix or a suffix of another name ------

test_a_prefix_of_a_requested_name_is_not_requested if {
	request := "mail it to sales@acme.co.uk, then upload it to https://files.acme.co.uk/inbox"
	every value in ["sales@acme.co", "https://files.acme.co/inbox", "files.acme.co", "sales@acme"] {
		doc := req("post", {"url": value}, {"egress": {"destinations": ["url"]}}, [fetched], request, [])
		codes(infoflow.approval) == {"destination_not_requested"} with input as doc
	}
	every value in ["sales@acme.co", "https://files.acme.co/inbox"] {
		shouted := req("post", {"url": value}, {"egress": {"destinations": ["url"]}}, [fetched], upper(request), [])
		codes(infoflow.approval) == {"destination_not_requested"} with input as shouted
	}
	every value in ["sales@acme.co.uk", "https://files.acme.co.uk/inbox", "https://files.acme.co.uk/other", "acme.co.uk"] {
		doc := req("post", {"url": value}, {"egress": {"destinations": ["url"]}}, [fetched], request, [])
		count(infoflow.approval) == 0 with input as doc
	}
}

test_a_suffix_of_a_requested_name_is_requested_only_as_its_parent_domain if {
	poster_only := {"egress": {"destinations": ["url"]}}
	every pair in [
		["bob@x.test", "mail jim.bob@x.test"],
		["bob@x.test", "mail jim_bob@x.test"],
		["https://x.test/a", "upload to evil-x.test"],
		["https://x.test/a", "upload to evil_x.test"],
		["ob@x.test", "mail bob@x.test"],
	] {
		doc := req("post", {"url": pair[0]}, poster_only, [fetched], pair[1], [])
		codes(infoflow.approval) == {"destination_not_requested"} with input as doc
	}
	every pair in [
		["https://example.com/a", "upload to www.example.com"],
		["https://x.test/a", "mail bob@x.test."],
		["bob@x.test", "mail bob@x.test."],
		["bob@x.test", "mail 'bob@x.test', thanks"],
		["bob@x.test", "mail <bob@x.test>"],
		["www.our-company.com", "post it to www.our-company.com.They sent it"],
		["https://x.test/a", "upload to HTTPS://x.test.Then stop"],
	] {
		doc := req("post", {"url": pair[0]}, poster_only, [fetched], pair[1], [])
		count(infoflow.approval) == 0 with input as doc
	}
}

# Go's lower() makes "İ" and the Kelvin sign ASCII: such a value names no requested or
# vouched-for address.
test_case_folding_to_ascii_is_not_a_match if {
	every value in ["bob@lİnk.test", "bob@\u212aey.test"] {
		doc := mail(value, [fetched], "mail bob@link.test or bob@key.test")
		codes(infoflow.approval) == {"destination_not_requested"} with input as doc
		vouched := req("mailer", {"to": value}, mailer, [fetched], "hi", ["@link.test", "@key.test", "bob@link.test", "bob@key.test"])
		codes(infoflow.approval) == {"destination_not_requested"} with input as vouched
	}
}

test_upper_case_ascii_is_a_match if {
	every value in ["Bob@LINK.test", "BOB@KEY.TEST", "https://KEY.test/x"] {
		count(infoflow.approval) == 0 with input as mail(value, [fetched], "mail bob@link.test or bob@key.test")
	}
}

# --- Open-world MCP tools taint like "trust": "untrusted" ---------------------------------

mcp_fetch_meta := {"readOnlyHint": true, "openWorldHint": true, "mcp": {"server": "web", "tool": "fetch_page", "digest": "sha256:00"}}

mcp_fetched := ran("fetch_page", {"url": "https://pages.test/a"}, mcp_fetch_meta)

test_an_open_world_mcp_read_taints if {
	infoflow.tainted with input as mail("stranger@elsewhere.test", [mcp_fetched], "hi")
	approvals := infoflow.approval with input as mail("stranger@elsewhere.test", [mcp_fetched], "hi")
	approvals == {{
		"code": "destination_not_requested",
		"message": "\"mailer\" sends to a destination (to) that is neither in the user's request nor in the trusted directory, after untrusted content was read (fetch_page); a human must approve",
	}}
}

test_an_mcp_read_without_hints_taints if {
	bare := ran("lookup", {}, {"mcp": {"server": "web", "tool": "lookup"}})
	codes(infoflow.approval) == {"destination_not_requested"} with input as mail("stranger@elsewhere.test", [bare], "hi")
}

test_a_closed_world_mcp_read_does_not_taint if {
	closed := ran("fetch_page", {}, object.union(mcp_fetch_meta, {"openWorldHint": false}))
	not infoflow.tainted with input as mail("stranger@elsewhere.test", [closed], "hi")
	count(infoflow.approval) == 0 with input as mail("stranger@elsewhere.test", [closed], "hi")
}

test_a_denied_mcp_read_does_not_taint if {
	denied := object.union(mcp_fetched, {"decision": "deny"})
	not infoflow.tainted with input as mail("stranger@elsewhere.test", [denied], "hi")
}

test_the_same_mcp_read_in_the_turn_does_not_taint if {
	doc := mail("stranger@elsewhere.test", [], "hi")
	turn := array.concat(doc.turn, [{"name": "fetch_page", "args": {}, "call_id": "c0", "metadata": mcp_fetch_meta}])
	count(infoflow.approval) == 0 with input as object.union(doc, {"turn": turn})
}

test_an_open_world_mcp_writer_sends_out_after_personal_data if {
	history := [ran("profile", {}, personal_reader), mcp_fetched]
	writer := {"openWorldHint": true, "readOnlyHint": false, "destructiveHint": false, "mcp": {"server": "web", "tool": "post"}}
	codes(infoflow.approval) == {"personal_data_after_untrusted"} with input as req("post", {}, writer, history, "", [])
	reader_only := object.union(writer, {"readOnlyHint": true})
	count(infoflow.approval) == 0 with input as req("post", {}, reader_only, history, "", [])
}

test_an_mcp_destructive_call_after_untrusted_needs_approval if {
	deleter := {"openWorldHint": false, "mcp": {"server": "tickets", "tool": "delete_ticket"}}
	codes(infoflow.approval) == {"destructive_after_untrusted"} with input as req("delete_ticket", {}, deleter, [mcp_fetched], "", [])
	safe := object.union(deleter, {"destructiveHint": false})
	count(infoflow.approval) == 0 with input as req("delete_ticket", {}, safe, [mcp_fetched], "", [])
	reading := object.union(deleter, {"readOnlyHint": true})
	count(infoflow.approval) == 0 with input as req("delete_ticket", {}, reading, [mcp_fetched], "", [])
}

test_decision_after_an_open_world_mcp_read if {
	doc := req("send_email", {"to": "eve@evil.test", "subject": "s", "body": "b"}, mailer, [mcp_fetched], "summarize pages.test", [])
	d := authz.decision with input as doc
	d.require_approval == true
	codes(d.reasons) == {"destination_not_requested"}
}

# tainted writes agent.authz's untrusted_output out for speed: it must say what
# taint_positions (which asks untrusted_output itself) says, for every kind of call.
test_tainted_is_taint_positions if {
	calls := [
		fetched, mcp_fetched, ran("x", {}, {}), ran("x", {}, internal_reader),
		ran("x", {}, {"mcp": {"server": "web"}}), ran("x", {}, {"mcp": {"server": "web"}, "openWorldHint": false}),
		ran("x", {}, {"mcp": {"server": 7}, "openWorldHint": true}), ran("x", {}, {"mcp": "web"}),
		ran("x", {}, {"trust": "Untrusted"}), ran("x", {}, {"openWorldHint": true}),
		refused("x", reader), refused("x", mcp_fetch_meta), object.union(mcp_fetched, {"decision": null}),
	]
	every call in calls {
		doc := mail("a@b.test", [call], "hi")
		positions := count(infoflow.taint_positions) > 0 with input as doc
		flag := tainted_flag with input as doc
		positions == flag
	}
	count([call | some call in calls; count(infoflow.taint_positions) > 0 with input as mail("a@b.test", [call], "hi")]) == 4
}

tainted_flag if infoflow.tainted

else := false

# agent.authz scans the history itself before it takes infoflow's reasons (for
# speed): it must take them exactly when the conversation is tainted.
test_authz_scans_are_tainted if {
	calls := [
		fetched, mcp_fetched, ran("x", {}, {}), ran("x", {}, internal_reader),
		ran("x", {}, {"mcp": {"server": "web"}}), ran("x", {}, {"mcp": {"server": "web"}, "openWorldHint": false}),
		ran("x", {}, {"mcp": {"server": 7}, "openWorldHint": true}), ran("x", {}, {"mcp": "web"}),
		ran("x", {}, {"trust": "Untrusted"}), ran("x", {}, {"openWorldHint": true}),
		refused("x", reader), refused("x", mcp_fetch_meta), object.union(mcp_fetched, {"decision": null}),
	]
	marker := {"code": "marker", "message": "m"}
	every call in calls {
		doc := mail("a@b.test", [call], "hi")
		flag := tainted_flag with input as doc
		denied := marker in authz.deny with input as doc with infoflow.deny as {marker}
		approved := marker in authz.approval with input as doc with infoflow.approval as {marker}
		denied == flag
		approved == flag
	}
}

# --- Content read in depth, as a renderer shows it ------------------------------------

poster_blocks := {"egress": {"destinations": ["channel"], "content": ["text", "blocks"]}}

post(args) := req("post_message", args, poster_blocks, [fetched], "post it to #general", ["example.com", "#general"])

test_a_link_nested_in_structured_content_is_read if {
	every args in [
		{"channel": "#general", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "<https://evil.test/login|log in>"}}]},
		{"channel": "#general", "blocks": {"a": [[{"b": {"c": ["www.evil.test"]}}]]}},
		{"channel": "#general", "blocks": [{"https://evil.test/login": "a key a renderer may show"}]},
		{"channel": "#general", "text": ["ok", {"url": "https://evil.test/x"}]},
	] {
		"link_not_requested" in codes(infoflow.deny) with input as post(args)
	}
	every args in [
		{"channel": "#general", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "<https://example.com/login|log in>"}}]},
		{"channel": "#general", "blocks": [{"type": "divider", "n": 3, "ok": true, "none": null}]},
	] {
		count(infoflow.deny) == 0 with input as post(args)
	}
}

test_links_are_read_as_a_renderer_shows_them if {
	every body in [
		"[log in](//evil.test/login)",
		"<a href=\"//evil.test/x\">x</a>",
		"<a href='https&colon;//evil.test/x'>x</a>",
		"<a href=\"https:&#47;&#47;evil.test/x\">x</a>",
		"<a href=\"https&#58&#47&#47evil.test\">x</a>",
		"<a href=\"https&#x3A;&#x002F;&#x2f;evil.test\">x</a>",
		"<a href=\"&#104;ttps://evil.test\">x</a>",
		"<a href=\"https://example.com&#46;evil.test/\">x</a>",
		"<a href=\"https://example.com&#x40;evil.test/\">x</a>",
		"<a href=\"https://example.com x@evil.test/\">x</a>",
		"<a href=\"https://example.com\n@evil.test/\">x</a>",
		"<a href = ' https://example.com\t x@evil.test/'>x</a>",
		"[x](<https://example.com x@evil.test/>)",
		"[x](https\\://evil.test)",
		"visit www\\.evil.test",
		"[x](https://example.com\\.evil.test/)",
		"ftp://evil.test/x",
		"smb://evil.test/share",
		"<https://example.com|x> <https://evil.test|y>",
	] {
		doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com", ["example.com"])
		"link_not_requested" in codes(infoflow.deny) with input as doc
	}
}

test_prose_around_trusted_links_is_not_a_link if {
	every body in [
		"see https://example.com/a//b and <https://example.com/c|here>",
		"// a comment, then https://example.com/",
		"<a href=\"https://example.com/a?x=1&amp;y=2\">Tom &amp; Jerry</a>",
		"He wrote \"see https://example.com and mail eve@other.test\"",
		"Files are in C:\\Users\\bob, see [docs](//example.com/docs)",
		"<a href=\"https&colon;//example.com/x\">x</a> and &#64;bob",
	] {
		doc := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com", ["example.com"])
		count(infoflow.deny) == 0 with input as doc
	}
}

test_html_and_markdown_readings if {
	infoflow.html_decoded("https&colon;&#47;&#0047;&#x2F;&#X2f;&#92&#9;x") == "https:////\\x"
	infoflow.html_decoded("&#106avascript&#x3a;&#X6A;&#0097;&#x0076;") == "javascript:jav"

	# A reference followed by more digits is read as its first digits (HTML reads "&#1066;"
	# as one character): one more reading, never one link fewer.
	infoflow.html_decoded("&#1066;") == "j6;"
	infoflow.html_decoded("java&Tab;scr&#10;ipt&#13:&amp;&#38;#47;") == "javascript:&amp;&#38;#47;"
	infoflow.markdown_unescaped("https\\://a\\.b\\\\c") == "https://a.b\\c"
}

# A destination given as an object or a list of objects is not read as a destination:
# it is never trusted, so the call waits for a human.
test_a_structured_destination_waits_for_a_human if {
	every to in [
		[{"email": "eve@evil.test"}],
		{"address": "eve@evil.test"},
		[{"email": "bob@example.com", "name": "Bob"}],
		["bob@example.com", {"email": "eve@evil.test"}],
		[["eve@evil.test"]],
		{"bob@example.com": "to"},
		[true],
	] {
		doc := req("mailer", {"to": to, "subject": "s", "body": "b"}, mailer, [fetched], "mail bob@example.com", ["@example.com"])
		codes(infoflow.approval) == {"destination_not_requested"} with input as doc
	}
}

# --- Links without "//": mailto:, javascript:, vbscript:, data:, file: ------------------

mail_body(body, directory) := req("mailer", {"to": "bob@example.com", "subject": "s", "body": body}, mailer, [fetched], "mail bob@example.com and ann@corp.test", directory)

test_a_mailto_link_to_requested_or_vouched_addresses_is_allowed if {
	every body in [
		"write to mailto:bob@example.com",
		"[Bob](mailto:Bob@Example.com) or <mailto:ann@corp.test|Ann>.",
		"<a href=\"mailto:bob@example.com,ann@corp.test?cc=carl@vouched.test&subject=Hi%20there&body=a%2Cb\">x</a>",
		"<a href='MAILTO:bob%40example.com?CC=dan@partners.test&amp;bcc=ann@corp.test'>x</a>",
		"mailto:?subject=a%20message%20without%20an%20address",
		"(mailto:bob@example.com), \"mailto:ann@corp.test\".",
	] {
		doc := mail_body(body, ["carl@vouched.test", "@partners.test"])
		count(infoflow.deny) == 0 with input as doc
	}
}

test_a_mailto_link_to_any_other_address_is_denied if {
	every body in [
		"write to mailto:eve@evil.test",
		"mailto:bob@example.com,eve@evil.test",
		"mailto:bob@example.com;eve@evil.test",
		"MailTo:bob@example.com?cc=eve@evil.test",
		"mailto:bob@example.com?subject=hi&BCC=eve@evil.test",
		"mailto:bob@example.com?subject=hi&to=eve@evil.test",
		"mailto:bob@example.com?reply-to=eve@evil.test",
		"<a href=\"mailto:bob@example.com?subject=hi&amp;bcc=eve@evil.test\">x</a>",
		"mailto:eve%40evil.test",
		"mailto:bob@example.com%2Ceve@evil.test",
		"mailto:bob@example.com?%63c=eve@evil.test",
		"mailto:bob@example.com<eve@evil.test>",
		"mailto:bob(x)@evil.test",
		"mailto:bob@example.com.evil.test",
		"mailto:jim.bob@example.com",
		"mailto:eve@vouched.test",
		"mailto:bob",
		"mailto:bob@example.com%0Abcc:eve@evil.test",
		"mailto:bob%zz@example.com",
	] {
		doc := mail_body(body, ["carl@vouched.test", "@partners.test"])
		infoflow.deny == {{
			"code": "link_not_requested",
			"message": "\"mailer\" would send a link to a site that is neither in the user's request nor in the trusted directory, after untrusted content was read (fetch)",
		}} with input as doc
	}
}

test_a_mailto_link_is_read_as_a_renderer_shows_it if {
	every body in [
		"<a href=\"mailto&colon;eve@evil.test\">x</a>",
		"<a href=\"&#109;ailto:eve@evil.test\">x</a>",
		"<a href=\"&#x6D;&#x61;ilto&#58;eve&#64;evil.test\">x</a>",
		"<a href=\"mailto:bob@example.com?cc&#61;eve@evil.test\">x</a>",
		"<a href=\"mailto:bob@example.com&#63;cc=eve@evil.test\">x</a>",
		"<a href=\"mail\tto:eve@evil.test\">x</a>",
		"<a href=\" mailto: eve@evil.test\">x</a>",
		"[x](mailto\\:eve@evil.test)",
		"<mailto:eve@evil.test|Bob>",
	] {
		"link_not_requested" in codes(infoflow.deny) with input as mail_body(body, [])
	}
}

test_mailto_addresses_are_read_from_each_part if {
	doc := mail_body("mailto:A@x.test,b%40y.test?cc=c@z.test&bcc=d@w.test;e@v.test&subject=f@u.test&body=g@t.test&amp;to=h@s.test", [])
	infoflow.unknown_mail_addresses == {"A@x.test", "b@y.test", "c@z.test", "d@w.test", "e@v.test", "h@s.test"} with input as doc
}

test_javascript_vbscript_data_and_file_links_are_denied if {
	every body in [
		"<a href=\"javascript:alert(1)\">x</a>",
		"[x](JavaScript:alert(1))",
		"<a href=\"java\tscript:alert(1)\">x</a>",
		"<a href=\"java&Tab;script:alert(1)\">x</a>",
		"<a href=java&#9;script:alert(1)>x</a>",
		"<a href=\"&#106;avascript&colon;alert(1)\">x</a>",
		"<a href=\"&#x6A&#x61vascript:alert(1)\">x</a>",
		"<a href=\" \u0001javascript:alert(1)\">x</a>",
		"<a href=\"javascript: alert(1)\">x</a>",
		"vbscript:msgbox(1)",
		"data:text/html;base64,PHNjcmlwdD4=",
		"see DATA:text/plain,hi",
		"file:/etc/passwd",
		"file:C:/Users/bob",
		"[x](javascript\\:alert(1))",
		"<javascript:alert(1)|x>",
	] {
		doc := mail_body(body, ["example.com"])
		"link_not_requested" in codes(infoflow.deny) with input as doc
		infoflow.unreadable_links == {"a javascript:, vbscript:, data: or file: link"} with input as doc
	}
}

test_schemes_in_prose_are_not_links if {
	every body in [
		"the data: 42 rows; note: see below",
		"mailto: is a scheme, and so are javascript: and data:",
		"Metadata:x, my_data:y, big-data:z, sub.file:w and {\"data\":1}",
		"see https://example.com/files/data:2024 and https://example.com/mailto:x",
		"file://example.com/share is a host's",
		"email bob@example.com, the mailto; javascript\tcode",
	] {
		doc := mail_body(body, ["example.com"])
		count(infoflow.deny) == 0 with input as doc
	}
}

# Every mailto:, javascript:, vbscript:, data: or file: link counts toward the link starts.
test_hostless_links_count_as_link_starts if {
	many := concat(" ", [sprintf("mailto:bob@example.com?subject=%d", [i]) | some i in numbers.range(1, 513)])
	doc := mail_body(many, [])
	infoflow.unreadable_links == {"content with too many link starts to read"} with input as doc
	infoflow.mailto_bodies == set() with input as doc
	fewer := concat(" ", [sprintf("mailto:bob@example.com?subject=%d", [i]) | some i in numbers.range(1, 500)])
	count(infoflow.deny) == 0 with input as mail_body(fewer, [])
	crowded := concat("", ["see https://example.com/ ", concat("", ["javascript:!" | some _ in numbers.range(1, 65)])])
	"a run of text with too many link starts" in infoflow.unreadable_links with input as mail_body(crowded, [])
	scripts := concat(" ", ["data:x" | some _ in numbers.range(1, 600)])
	"content with too many link starts to read" in infoflow.unreadable_links with input as mail_body(scripts, [])
	prose := concat(" ", ["data: x" | some _ in numbers.range(1, 600)])
	infoflow.link_starts == 0 with input as mail_body(prose, [])
}

# The addresses of mailto: links are read up to 256 separators in all (257 addresses).
test_a_mailto_link_with_too_many_addresses_is_not_read if {
	body := concat("", ["mailto:", concat(",", ["bob@example.com" | some _ in numbers.range(0, 257)])])
	doc := mail_body(body, [])
	infoflow.unreadable_links == {"mailto: links with too many addresses to read"} with input as doc
	infoflow.mailto_address_texts == set() with input as doc
	"link_not_requested" in codes(infoflow.deny) with input as doc
	fewer := concat("", ["mailto:", concat(",", ["bob@example.com" | some _ in numbers.range(0, 256)])])
	count(infoflow.deny) == 0 with input as mail_body(fewer, [])
}

test_mailto_links_are_fine_before_untrusted_content if {
	doc := req("mailer", {"to": "ann@corp.test", "body": "mailto:eve@evil.test javascript:x"}, mailer, [], "mail ann@corp.test", [])
	count(infoflow.deny) == 0 with input as doc
}
