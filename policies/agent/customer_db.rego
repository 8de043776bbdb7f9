# Rules for the customer-database tools (toolkit "CustomerDBTool").
#
# Who may call which tool is in data.agent.config.tool_roles; this file adds
# the argument checks: PII reads, status values and the toolkit check.
package agent.authz

import data.agent.config

# A tool with a customer-database name must really come from that toolkit.
# (The list is searched with `tools[_] ==` rather than `in`: OPA's rule index
# reads the data an `in` names for every call, even one of another toolkit.)
# config.customer_db is read whole, once, into a local: OPA keeps what it read
# for the rest of the decision, so the PII rule's read of pii_roles below comes
# from that copy rather than from another read of the store.
deny contains {"code": "wrong_toolkit", "message": message} if {
	cdb := config.customer_db
	not input.tool.metadata.toolkit == cdb.toolkit
	cdb.tools[_] == tool_name
	message := concat("", [
		"tool \"", tool_name, "\" is not registered under toolkit \"",
		cdb.toolkit, "\"",
	])
}

# --- get_customer_details: PII fields --------------------------------------

pii_fields := {lower(field) | some field in config.customer_db.pii_fields}

# Fields named in args.fields, lower-cased. The contract form is an object of
# field name -> true; a field mapped to false is not requested. A list of
# names is accepted too.
requested_fields contains lower(field) if {
	is_object(tool_args.fields)
	some field, wanted in tool_args.fields
	wanted != false
}

requested_fields contains lower(field) if {
	is_array(tool_args.fields)
	some field in tool_args.fields
	is_string(field)
}

# The message names the requested PII fields: schema field names from data,
# not values (the intersection with pii_fields keeps out anything else).
# (The role is read from the input, not user_role: pii_messages needs a usable
# role anyway, and a PII role lets the call through with one lookup.)
deny contains {"code": "pii_fields_for_role", "message": message} if {
	input.tool.name == "get_customer_details"
	not input.user.role in config.customer_db.pii_roles
	some message in pii_messages
}

pii_messages contains concat("", ["role \"", user_role, "\" may not read PII fields: ", concat(", ", sort(asked))]) if {
	asked := requested_fields & pii_fields
	count(asked) > 0
}

# No fields (missing or empty) means "all fields", which includes PII.
pii_messages contains concat("", [
	"role \"", user_role, "\" may not read PII fields: ", concat(", ", sort(pii_fields)),
	" (no fields requested means all fields)",
]) if {
	count(requested_fields) == 0
}

# --- update_customer_status: allowed status values -------------------------

new_status := tool_args.new_status if is_string(tool_args.new_status)

# The message leaves out the requested value: it is model output.
deny contains {"code": "invalid_status", "message": message} if {
	input.tool.name == "update_customer_status"
	is_string(new_status)
	not new_status in config.customer_db.statuses
	message := concat("", [
		"new_status is not a valid customer status (allowed: ",
		concat(", ", sort(config.customer_db.statuses)), ")",
	])
}

deny contains {
	"code": "status_missing",
	"message": "update_customer_status needs new_status as a string",
} if {
	input.tool.name == "update_customer_status"
	not new_status
}
