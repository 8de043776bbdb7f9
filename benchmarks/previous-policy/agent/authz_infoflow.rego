# Combines the information-flow rules (package agent.infoflow) into the
# decision: their denials and approval requests count like any other.
package agent.authz

import data.agent.infoflow

deny contains reason if some reason in infoflow.deny

approval contains reason if some reason in infoflow.approval
