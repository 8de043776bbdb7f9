# Shared users, tools and an input builder for the policy tests.
package agent.authz_test

admin_user := {"id": "user-123", "role": "admin"}

internal_user := {"id": "user-456", "role": "internal_user"}

guest_user := {"id": "user-789", "role": "guest"}

db_meta := {"toolkit": "CustomerDBTool"}

untrusted_meta := {"trust": "untrusted"}

egress_meta := {"egress": true}

# A tool call as it appears in input.tool and input.turn.
call(name, args, call_id, metadata) := {
	"name": name,
	"args": args,
	"call_id": call_id,
	"metadata": metadata,
}

# An earlier call as it appears in input.history.
past(name, metadata, decision) := {
	"name": name,
	"args": {},
	"call_id": "past-1",
	"metadata": metadata,
	"decision": decision,
	"reasons": [],
	"status": "success",
}

# A full v1 input for one call, proposed alone in its turn.
request(user, tool) := request_with(user, tool, [tool], [])

request_with(user, tool, turn, history) := {
	"version": 1,
	"tool": tool,
	"user": user,
	"context": {"thread_id": "t-1", "node": "tools", "step": 1, "tenant": null},
	"turn": turn,
	"history": history,
}

allowed := {"allow": true, "reasons": []}

denied(reasons) := {"allow": false, "reasons": reasons}

needs_approval(reasons) := {"allow": false, "require_approval": true, "reasons": reasons}

# One coded reason, as it appears in decision.reasons.
reason(code, message) := {"code": code, "message": message}

# The codes of a decision's reasons, in order.
codes_of(d) := [r.code | some r in d.reasons]
