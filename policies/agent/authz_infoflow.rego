# Combines the information-flow rules (package agent.infoflow) into the
# decision: their denials and approval requests count like any other.
#
# Every one of those rules needs untrusted content in the history
# (infoflow.tainted), so a conversation that read none skips them all. For
# speed, each rule below scans input.history itself (infoflow.tainted written
# out: a "trust": "untrusted" call, or an open-world MCP tool's, whose output
# the model saw) rather than asking for infoflow.tainted: the scan of a few
# entries costs less than looking up a fact of another package, and it is done
# for every call. test_authz_scans_are_tainted keeps the two the same.
package agent.authz

import data.agent.infoflow

deny contains reason if {
	some call in input.history
	call.metadata.trust == "untrusted"
	call.decision != "deny"
	some reason in infoflow.deny
}

deny contains reason if {
	some call in input.history
	is_string(call.metadata.mcp.server)
	not call.metadata.openWorldHint == false
	call.decision != "deny"
	some reason in infoflow.deny
}

approval contains reason if {
	some call in input.history
	call.metadata.trust == "untrusted"
	call.decision != "deny"
	some reason in infoflow.approval
}

approval contains reason if {
	some call in input.history
	is_string(call.metadata.mcp.server)
	not call.metadata.openWorldHint == false
	call.decision != "deny"
	some reason in infoflow.approval
}
