# Combines the information-flow rules (package agent.infoflow) into the
# decision: their denials and approval requests count like any other.
#
# Every one of those rules needs untrusted content in the history
# (infoflow.tainted), so a conversation that read none skips them all with
# one check.
package agent.authz

import data.agent.infoflow

deny contains reason if {
	infoflow.tainted
	some reason in infoflow.deny
}

approval contains reason if {
	infoflow.tainted
	some reason in infoflow.approval
}
