# Information-flow rules against prompt injection (input contract v1).
#
# A tool's output may carry text written by someone other than the user: a web
# page, a received email, a review. Once the model has read such text it may be
# following instructions hidden in it. These rules decide what the agent may
# still do after that, keyed only on tool metadata and the input, never on tool
# names or argument values of a particular application.
#
# Tool metadata read here (all optional):
#   "trust": "untrusted"     the output may carry third-party text (a source of taint)
#   "personal_data": true    the output holds the user's personal data
#   "read_only": true        the call changes nothing and sends nothing anywhere
#   "destructive": true      the call deletes data or changes account settings
#   "egress": {              the call sends data, money or access to a destination
#     "destinations": [...], argument names whose values name where it goes
#                            (strings or lists of strings)
#     "content": [...],      argument names of free text sent along (checked for links)
#     "addressee": "..."     argument naming the person a destination belongs to
#   }
# ("egress": true, without destinations, is the coarse rule of exfiltration.rego.)
#
# Trusted values come from the input, never from tool output:
#   input.context.request    the user's request for the current task
#   input.context.directory  destinations the application vouches for this run
#                            (addresses, account numbers, names, channels, sites;
#                            "@example.com" vouches for every address at a domain)
#   data.agent.config.trusted_directory   the same, static
#
# A call the model proposes is influenced only by results it has seen: the
# earlier calls in input.history that were not denied. Calls of the same turn
# are not counted, since their results did not exist when the call was proposed.
#
# Rules (a deny overrides an approval in agent.authz):
#   destination_not_requested      approval: after untrusted content, an egress to a
#                                  destination neither requested nor in the directory
#   link_not_requested             deny: after untrusted content, an egress whose text
#                                  carries a link to a site neither requested nor in
#                                  the directory
#   destructive_after_untrusted    approval: after untrusted content, a destructive
#                                  call
#   personal_data_after_untrusted  approval: an egress after both untrusted content
#                                  and the user's personal data were read
#   action_after_refusal           approval: after untrusted content, once a
#                                  side-effecting call was refused (by the policy or a
#                                  reviewer), every further side-effecting call
#   write_after_untrusted          approval, only when data.agent.config.infoflow
#                                  .approve_writes_after_untrusted is true: every
#                                  side-effecting call after untrusted content
#
# Messages name the tool, argument names and the untrusted tools read, never
# argument values.
package agent.infoflow

import data.agent.config

# --- The call being decided ------------------------------------------------

default name := "unnamed tool"

name := input.tool.name if is_string(input.tool.name)

default args := {}

args := input.tool.args if is_object(input.tool.args)

default meta := {}

meta := input.tool.metadata if is_object(input.tool.metadata)

egress := meta.egress if is_object(meta.egress)

sends_out if egress

sends_out if meta.egress == true

side_effecting if not meta.read_only == true

# --- What the model has seen -----------------------------------------------

label(call) := call.name if is_string(call.name)

label(call) := "unnamed tool" if not is_string(call.name)

seen(call) if call.decision != "deny"

untrusted(call) if call.metadata.trust == "untrusted"

# Positions in input.history of untrusted calls whose output the model saw.
taint_positions contains i if {
	some i, call in input.history
	seen(call)
	untrusted(call)
}

tainted if count(taint_positions) > 0

untrusted_sources contains label(input.history[i]) if some i in taint_positions

personal_sources contains label(call) if {
	some call in input.history
	seen(call)
	call.metadata.personal_data == true
}

sources_text := concat(", ", sort(untrusted_sources))

# --- Trusted values ----------------------------------------------------------

default request := ""

request := strip_scheme(lower(input.context.request)) if is_string(input.context.request)

strip_scheme(s) := regex.replace(s, `https?://`, "")

# The comparable form of a value: lower case, no scheme, no trailing slash.
canon(value) := trim_right(strip_scheme(lower(trim_space(value))), "/")

# The value appears in the request as a whole word (or words).
mentioned(value) if {
	v := canon(value)
	count(v) > 1
	some pos in indexof_n(request, v)
	word_start(pos)
	word_end(pos + count(v))
}

word_start(pos) if pos == 0

word_start(pos) if {
	pos > 0
	not regex.match(`[a-z0-9]`, substring(request, pos - 1, 1))
}

word_end(end) if end == count(request)

word_end(end) if {
	end < count(request)
	not regex.match(`[a-z0-9]`, substring(request, end, 1))
}

directory_entries contains canon(entry) if {
	is_array(input.context.directory)
	some entry in input.context.directory
	is_string(entry)
}

directory_entries contains canon(entry) if {
	some entry in config.trusted_directory
	is_string(entry)
}

in_directory(value) if canon(value) in directory_entries

in_directory(value) if {
	parts := split(canon(value), "@")
	count(parts) > 1
	concat("", ["@", parts[count(parts) - 1]]) in directory_entries
}

# The site of a URL-like value ("www.example.com/page" -> "www.example.com").
site(value) := host if {
	host := split(canon(value), "/")[0]
	host != canon(value)
	contains(host, ".")
}

trusted(value) if mentioned(value)

trusted(value) if in_directory(value)

trusted(value) if mentioned(site(value))

trusted(value) if in_directory(site(value))

# --- Destinations ------------------------------------------------------------

destination_fields contains field if {
	some field in egress.destinations
	is_string(field)
}

# Values a destination argument holds; anything but a string is unreadable.
field_values(field) := [args[field]] if is_string(args[field])

field_values(field) := args[field] if is_array(args[field])

field_values(field) := [] if args[field] == null

field_values(field) := [] if not has_arg(field)

field_values(field) := [{"unreadable": true}] if {
	has_arg(field)
	not is_string(args[field])
	not is_array(args[field])
	args[field] != null
}

has_arg(field) if _ = args[field]

untrusted_destination(value) if not is_string(value)

untrusted_destination(value) if {
	is_string(value)
	not trusted(value)
}

unknown_destination_fields contains field if {
	some field in destination_fields
	some value in field_values(field)
	untrusted_destination(value)
}

# A destination looked up for a person the user named: the addressee appears in
# the request, and a source the request names is among the untrusted reads.
resolved_for_named_addressee if {
	field := egress.addressee
	is_string(args[field])
	mentioned(args[field])
	some i in taint_positions
	some value in input.history[i].args
	is_string(value)
	mentioned(value)
}

approval contains {"code": "destination_not_requested", "message": message} if {
	egress
	count(unknown_destination_fields) > 0
	tainted
	not resolved_for_named_addressee
	message := concat("", [
		"\"", name, "\" sends to a destination (", concat(", ", sort(unknown_destination_fields)),
		") that is neither in the user's request nor in the trusted directory, after untrusted content was read (",
		sources_text, "); a human must approve",
	])
}

# --- Links in what is sent ---------------------------------------------------

content_texts contains lower(args[field]) if {
	some field in egress.content
	is_string(args[field])
}

content_texts contains lower(text) if {
	some field in egress.content
	is_array(args[field])
	some text in args[field]
	is_string(text)
}

link_sites contains trim_right(split(strip_scheme(link), "/")[0], ".,;:!?") if {
	some text in content_texts
	some link in regex.find_n(`(https?://|www\.)[^\s"'<>()\[\]{}]+`, text, -1)
}

unknown_link_sites contains host if {
	some host in link_sites
	not trusted(host)
}

deny contains {"code": "link_not_requested", "message": message} if {
	egress
	count(unknown_link_sites) > 0
	tainted
	message := concat("", [
		"\"", name, "\" would send a link to a site that is neither in the user's request nor in the trusted directory, after untrusted content was read (",
		sources_text, ")",
	])
}

# --- Destructive calls -------------------------------------------------------

approval contains {"code": "destructive_after_untrusted", "message": message} if {
	meta.destructive == true
	tainted
	message := concat("", [
		"\"", name, "\" deletes data or changes account settings after untrusted content was read (",
		sources_text, "); a human must approve",
	])
}

# --- Personal data -------------------------------------------------------------

approval contains {"code": "personal_data_after_untrusted", "message": message} if {
	sends_out
	count(personal_sources) > 0
	tainted
	message := concat("", [
		"\"", name, "\" sends data out after both personal data (", concat(", ", sort(personal_sources)),
		") and untrusted content (", sources_text, ") were read; a human must approve",
	])
}

# --- After a refusal -------------------------------------------------------------

# Side-effecting calls refused after the first untrusted read: the agent already
# tried something the policy or a reviewer stopped.
refused contains label(call) if {
	first := min(taint_positions)
	some i, call in input.history
	i > first
	call.decision == "deny"
	not call.metadata.read_only == true
}

approval contains {"code": "action_after_refusal", "message": message} if {
	side_effecting
	count(refused) > 0
	message := concat("", [
		"\"", name, "\" comes after a refused call (", concat(", ", sort(refused)),
		") in a conversation that read untrusted content (", sources_text,
		"); every further action needs a human",
	])
}

# --- Optional: every write after untrusted content --------------------------------

approval contains {"code": "write_after_untrusted", "message": message} if {
	config.infoflow.approve_writes_after_untrusted == true
	side_effecting
	tainted
	message := concat("", [
		"\"", name, "\" changes state after untrusted content was read (",
		sources_text, "); a human must approve every action",
	])
}
