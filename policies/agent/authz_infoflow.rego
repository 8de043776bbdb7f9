# Combines the information-flow rules (package agent.infoflow) into the
# decision: their denials and approval requests count like any other.
#
# Every one of those rules needs untrusted content in the history
# (infoflow.tainted), so a conversation that read none skips them all. For
# speed, each rule below scans input.history itself (infoflow.tainted written
# out: a "trust": "untrusted" call, or an open-world MCP tool's, whose output
# the model saw) rather than asking for infoflow.tainted: the scan of a few
# entries costs less than looking up a fact of another package.
# test_authz_scans_are_tainted keeps the two the same.
#
# Each rule is also gated, by its first expression, on what the call being
# decided must be for infoflow to have a reason about it at all. OPA's rule index
# reads those expressions, so the common call (no egress, not destructive, not an
# MCP tool's, after no refused call) enters none of the scans but one cheap one:
#   deny      link_not_requested is an egress call's ("egress": {...});
#   approval  destination_not_requested: an egress call ("egress": {...});
#             destructive_after_untrusted: "destructive": true, or an MCP tool's;
#             personal_data_after_untrusted: a call that sends out ("egress", or
#             an MCP tool's);
#             action_after_refusal: a refused call in the history;
#             write_after_untrusted: data.agent.config.infoflow
#             .approve_writes_after_untrusted is true.
# A new infoflow rule about calls outside these groups needs a gate here too.
package agent.authz

import data.agent.config
import data.agent.infoflow

deny contains reason if {
	input.tool.metadata.egress
	some call in input.history
	call.metadata.trust == "untrusted"
	call.decision != "deny"
	some reason in infoflow.deny
}

deny contains reason if {
	input.tool.metadata.egress
	some call in input.history
	is_string(call.metadata.mcp.server)
	not call.metadata.openWorldHint == false
	call.decision != "deny"
	some reason in infoflow.deny
}

# infoflow's approvals in a tainted conversation, for the gates below.
infoflow_approvals contains reason if {
	some call in input.history
	call.metadata.trust == "untrusted"
	call.decision != "deny"
	some reason in infoflow.approval
}

infoflow_approvals contains reason if {
	some call in input.history
	is_string(call.metadata.mcp.server)
	not call.metadata.openWorldHint == false
	call.decision != "deny"
	some reason in infoflow.approval
}

approval contains reason if {
	input.tool.metadata.egress
	some reason in infoflow_approvals
}

approval contains reason if {
	input.tool.metadata.destructive == true
	some reason in infoflow_approvals
}

approval contains reason if {
	input.tool.metadata.mcp.server
	some reason in infoflow_approvals
}

approval contains reason if {
	config.infoflow.approve_writes_after_untrusted == true
	some reason in infoflow_approvals
}

# The scan the common call does: for a refused call (any, not only one after an
# untrusted read: infoflow.refused decides that). One expression per entry
# (`input.history[_].decision`) rather than binding each call first.
approval contains reason if {
	input.history[_].decision == "deny"
	some reason in infoflow_approvals
}
