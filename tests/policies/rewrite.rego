# A policy that rewrites arguments: `limit` is capped at 100.
package rewrite

default decision := {"allow": true, "reasons": []}

decision := {"allow": true, "reasons": [], "args": {"query": input.tool.args.query, "limit": 100}} if {
	input.tool.args.limit > 100
}
