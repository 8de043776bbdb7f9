# Test-only, loaded beside policies/ by the fail-open tests (red teams 22 and 23): a rule
# OPA is slow on when an email body is long and holds many "http:" (quadratic: the link
# search the information-flow pack had before it searched run by run). It stands in for any
# rule of an application's policy that the model's input can make slow; it never denies.
package agent.authz

deny contains {"code": "slow_rule", "message": "never"} if {
	input.tool.name == "send_email"
	some found in regex.find_n(`[hH][tT][tT][pP][sS]?:(?:[^\s/\\?#@]*@)*[A-Za-z0-9.%:-]*`, input.tool.args.body, -1)
	found == "never"
}
