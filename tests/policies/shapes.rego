# Policies that answer in every shape the guard accepts, and in shapes it must reject.
package shapes

# A decision object.
object_decision := {"allow": true, "reasons": []} if input.tool.name == "ok"

object_decision := {"allow": false, "reasons": ["nope"]} if input.tool.name != "ok"

# A bare boolean.
default boolean_decision := false

boolean_decision if input.tool.name == "ok"

# OPA's agent-tool-calling convention: a set of deny reasons, empty means allow.
deny_set contains "tool is not ok" if input.tool.name != "ok"

deny_set contains "second reason" if input.tool.name == "twice"

# Human approval requested.
approval := {"allow": false, "require_approval": true, "reasons": ["a human must approve"]}

# Never defined.
undefined_decision if input.tool.name == "never-a-real-tool-name"

# Wrong types at the decision path.
number_decision := 42

object_without_allow := {"reasons": ["x"]}

allow_not_bool := {"allow": "yes"}
