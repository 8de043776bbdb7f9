# A policy for the complete-mediation tests: each tool name has one behaviour.
#   read                      allow
#   send   to *@ok.test       allow;  to *@ask.test  human approval;  else deny
#   pay    amount a number <= 1000 allow; a number > 1000 deny; anything else allow
#          (a string amount is what a model sends when it quotes numbers: deciding on
#          the raw JSON would let "5000" through)
#   search scope "all" needs approval; else allow with limit capped at 10 (a rewrite)
#   finish (a return_direct tool) deny
package mediation

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

decision := {"allow": true, "reasons": []} if input.tool.name == "read"

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "send"
	endswith(input.tool.args.to, "@ok.test")
}

decision := {"allow": false, "require_approval": true, "reasons": [{"code": "ask", "message": "a human must approve"}]} if {
	input.tool.name == "send"
	endswith(input.tool.args.to, "@ask.test")
}

decision := {"allow": false, "reasons": [{"code": "big_payment", "message": "amount over 1000"}]} if {
	input.tool.name == "pay"
	big_payment
}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "pay"
	not big_payment
}

big_payment if {
	is_number(input.tool.args.amount)
	input.tool.args.amount > 1000
}

# A payment tool may name its field "sum" in the schema the model sees (an alias).
big_payment if {
	is_number(input.tool.args.sum)
	input.tool.args.sum > 1000
}

decision := {"allow": false, "require_approval": true, "reasons": [{"code": "scope", "message": "all scopes need a human"}]} if {
	input.tool.name == "search"
	input.tool.args.scope == "all"
}

decision := {"allow": true, "reasons": [], "args": {"scope": input.tool.args.scope, "limit": min([input.tool.args.limit, 10])}} if {
	input.tool.name == "search"
	input.tool.args.scope != "all"
}

decision := {"allow": false, "reasons": [{"code": "no_finish", "message": "finishing is not allowed"}]} if input.tool.name == "finish"
