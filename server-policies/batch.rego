# Server-side extension of agent.authz, loaded into OPA beside policies/ for
# OPAServer(batch=True): `opa run --server policies/ server-policies/`.
#
# It lives apart from policies/ because the embedded engine (regopy) evaluates
# every decision more slowly when any loaded module uses `with`.
package agent.authz

# input.calls holds the calls of a turn to decide and the rest of the input is
# shared. Each call's decision is what `decision` gives with that call as
# input.tool.
batch_decisions[call.call_id] := d if {
	some call in input.calls
	d := decision with input.tool as call
}
