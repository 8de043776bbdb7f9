# Stateful exfiltration guard.
#
# Tools whose metadata has "trust": "untrusted" return content that may carry
# a prompt injection (e.g. fetch_url). Tools whose metadata has "egress": true
# send data out (e.g. send_email, http_post). Once untrusted content has been
# read - by an earlier allowed call in input.history, or by another call in
# the same model turn (input.turn) - an egress call needs a human's approval,
# and an email to an address outside data.agent.config.allowed_email_domains
# is denied outright.
#
# Messages name the egress tool and the untrusted tools, never the recipient
# addresses or other argument values.
package agent.authz

import data.agent.config

untrusted_output(call) if call.metadata.trust == "untrusted"

sends_data_out(call) if call.metadata.egress == true

call_label(call) := call.name if is_string(call.name)

call_label(call) := "unnamed tool" if not has_name(call)

has_name(call) if is_string(call.name)

# The call being decided sends data out; computed once per decision.
egress_call if sends_data_out(input.tool)

# The rules below add to egress_deny and egress_approval, which count for a call
# with "egress": true (here) and for an MCP tool's call (mcp.rego); the first
# expression is one OPA's rule index reads, so any other call never enters them.
deny contains reason if {
	input.tool.metadata.egress == true
	some reason in egress_deny
}

approval contains reason if {
	input.tool.metadata.egress == true
	some reason in egress_approval
}

# Untrusted-output tools that ran earlier in the conversation. Anything not
# denied counts as having run (conservative: "allow" and any other value).
untrusted_in_history contains call_label(call) if {
	some call in input.history
	call.decision != "deny"
	untrusted_output(call)
}

# Other untrusted-output calls proposed in the same model turn.
untrusted_in_turn contains call_label(call) if {
	some call in input.turn
	not call.call_id == input.tool.call_id
	untrusted_output(call)
}

egress_approval contains {"code": "egress_after_untrusted", "message": message} if {
	egress_call
	count(untrusted_in_history) > 0
	message := concat("", [
		"\"", tool_name, "\" sends data out after untrusted content was read (",
		concat(", ", sort(untrusted_in_history)), "); a human must approve",
	])
}

egress_approval contains {"code": "egress_in_untrusted_turn", "message": message} if {
	egress_call
	count(untrusted_in_turn) > 0
	message := concat("", [
		"\"", tool_name, "\" sends data out in the same turn as untrusted content is read (",
		concat(", ", sort(untrusted_in_turn)), "); a human must approve",
	])
}

untrusted_sources := untrusted_in_history | untrusted_in_turn

# --- Recipient domains -----------------------------------------------------

recipient_fields := ["to", "cc", "bcc"]

recipients contains address if {
	some field in recipient_fields
	address := tool_args[field]
	is_string(address)
}

recipients contains address if {
	some field in recipient_fields
	is_array(tool_args[field])
	some address in tool_args[field]
	is_string(address)
}

# An address held deeper, in an object or a nested list ([{"email": "eve@evil.test"}]);
# the names and labels beside it are not addresses.
recipients contains address if {
	some field in recipient_fields
	not is_string(tool_args[field])
	walk(tool_args[field], [_, address])
	is_string(address)
	contains(address, "@")
}

# "Bob <bob@example.com>" -> "example.com"; an address without "@" yields
# the whole string, which matches no allowed domain.
email_domain(address) := domain if {
	parts := split(address, "@")
	domain := lower(trim(parts[count(parts) - 1], " <>"))
}

allowed_email_domains := {lower(domain) | some domain in config.allowed_email_domains}

outside_recipients contains address if {
	some address in recipients
	not email_domain(address) in allowed_email_domains
}

egress_deny contains {"code": "egress_outside_domains", "message": message} if {
	egress_call
	count(untrusted_sources) > 0
	count(outside_recipients) > 0
	message := concat("", [
		"\"", tool_name, "\" may not send outside the allowed domains (",
		concat(", ", sort(allowed_email_domains)), ") after untrusted content was read (",
		concat(", ", sort(untrusted_sources)), ")",
	])
}
