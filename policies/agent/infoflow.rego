# Information-flow rules against prompt injection (input contract v1).
#
# A tool's output may carry text written by someone other than the user: a web
# page, a received email, a review. Once the model has read such text it may be
# following instructions hidden in it. These rules decide what the agent may
# still do after that, keyed only on tool metadata and the input, never on tool
# names or argument values of a particular application.
#
# Tool metadata read here (all optional):
#   "trust": "untrusted"     the output may carry third-party text (a source of taint);
#                            so may an open-world MCP tool's (openWorldHint not false,
#                            as agent.authz reads MCP annotations in mcp.rego)
#   "personal_data": true    the output holds the user's personal data
#   "read_only": true        the call changes nothing and sends nothing anywhere
#   "destructive": true      the call deletes data or changes account settings (and so
#                            may an MCP tool that is not read-only, destructiveHint not
#                            false)
#   "egress": {              the call sends data, money or access to a destination
#     "destinations": [...], argument names whose values name where it goes
#                            (strings or lists of strings)
#     "content": [...],      argument names of free text sent along (checked for links)
#     "addressee": "..."     argument naming the person a destination belongs to
#   }
# ("egress": true, without destinations, is the coarse rule of exfiltration.rego; an
# open-world MCP tool that is not read-only sends out like it.)
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
#                                  carries a link to a site (or a mailto: link to an
#                                  address) neither requested nor in the directory, or
#                                  a javascript:, vbscript:, data: or file: link
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
#
# agent.authz asks for these reasons only for the calls that can have one (its
# rule index then skips the rest; see authz_infoflow.rego): a rule added here for
# other calls needs a gate there too.
package agent.infoflow

import data.agent.authz
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

# "egress": true, or an open-world MCP tool that is not read-only (agent.authz's cached
# egress_call).
sends_out if authz.egress_call

destructive if meta.destructive == true

destructive if authz.mcp_destructive(input.tool)

side_effecting if not meta.read_only == true

# --- What the model has seen -----------------------------------------------

label(call) := call.name if is_string(call.name)

label(call) := "unnamed tool" if not is_string(call.name)

seen(call) if call.decision != "deny"

# Positions in input.history of untrusted calls ("trust": "untrusted", or an open-world MCP
# tool: agent.authz's untrusted_output) whose output the model saw (not denied).
taint_positions contains i if {
	some i, call in input.history
	authz.untrusted_output(call)
	call.decision != "deny"
}

# The same as count(taint_positions) > 0, without building the set: this is
# asked for every decision, so agent.authz's untrusted_output is written out here
# (test_tainted_is_taint_positions keeps the two the same).
tainted if {
	some call in input.history
	call.metadata.trust == "untrusted"
	call.decision != "deny"
}

tainted if {
	some call in input.history
	is_string(call.metadata.mcp.server)
	not call.metadata.openWorldHint == false
	call.decision != "deny"
}

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

# The request as written (case kept), at the same positions as `request`.
default request_text := ""

request_text := regex.replace(input.context.request, `[hH][tT][tT][pP][sS]?://`, "") if is_string(input.context.request)

# The comparable form of a value: lower case, no scheme, no trailing slash. A value holding
# "İ" or the Kelvin sign has none: lower() makes them ASCII "i" and "k", where a mail server
# or a browser (IDNA) reads another name.
canon(value) := trim_right(strip_scheme(lower(trim_space(value))), "/") if {
	not contains(value, "\u0130") # İ
	not contains(value, "\u212a") # the Kelvin sign
}

# The value appears in the request as a whole word (or words): what precedes and what
# follows it in the request does not carry on a name. "acme.co" is not a word of
# "acme.co.uk", nor "x.test" of "evil-x.test", nor "bob@x.test" of "jim.bob@x.test"; a
# domain is one of "www.example.com" (the parent of a requested name: it is the same
# owner's), and a sentence's final dot ends a word ("mail bob@x.test.", and "post it to
# www.x.test.Then ...": a small letter, a dot, a capital).
mentioned(value) if {
	v := canon(value)
	count(v) > 1
	some pos in indexof_n(request, v)
	word_start(pos, v)
	word_end(pos + count(v))
}

word_start(pos, _) if pos == 0

word_start(pos, _) if {
	pos > 0
	not regex.match(`[a-z0-9_.-]`, substring(request, pos - 1, 1))
}

word_start(pos, v) if {
	pos > 0
	substring(request, pos - 1, 1) == "."
	regex.match(`^[a-z0-9-]+(\.[a-z0-9-]+)+$`, v)
}

word_end(end) if end == count(request)

word_end(end) if {
	end < count(request)
	not regex.match(`^([a-z0-9_-]|\.[a-z0-9])`, substring(request, end, 2))
}

word_end(end) if {
	end > 0
	regex.match(`^[a-z0-9]\.[A-Z]`, substring(request_text, end - 1, 3))
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

# A directory entry "@example.com" vouches for one mailbox of that domain: the whole
# value must be a single address (a URL or a list that merely ends in "@example.com" is
# not one).
in_directory(value) if {
	address := canon(value)
	regex.match(`^[^@\s,;<>/?#:"'()\[\]\\]+@[a-z0-9.-]+$`, address)
	parts := split(address, "@")
	concat("", ["@", parts[1]]) in directory_entries
}

# --- Reading a URL as a browser does --------------------------------------------
#
# The host of a URL is read as the WHATWG URL standard (browsers) and urllib3 (requests)
# read an http(s) URL: tabs and newlines are dropped; an "http:" or "https:" scheme and the
# slashes or backslashes after it are skipped (a value without a scheme is read as a browser
# reads what is typed into its address bar); the authority ends at the first "/", "\", "?"
# or "#"; the host follows its last "@" (what precedes is userinfo) and ends at ":port";
# percent-escapes of letters, digits, "-" and "." are decoded, letters taken in lower case,
# and one trailing dot (the DNS root) dropped. A host that is not then a plain DNS name or
# a dotted IPv4 address (an IPv6 literal, non-ASCII text that IDNA would map, an escape of
# anything else, "0x7f.1") has no reading here, so nobody vouches for it.
#
# "https://evil.test\@example.com/x" -> "evil.test"; "HTTPS://Example.COM./a" ->
# "example.com"; "https://ex%61mple.com:8443" -> "example.com"; "evil.test?@example.com/x"
# -> "evil.test"; "user@evil.test/x" -> "evil.test".

# The text a URL parser reads: no tabs or newlines, no surrounding spaces.
url_text(value) := trim_space(strings.replace_n({"\t": "", "\n": "", "\r": ""}, value))

# What follows the scheme and the slashes after it.
url_rest(text) := trim_left(substring(text, 6, -1), "/\\") if {
	lower(substring(text, 0, 6)) == "https:"
} else := trim_left(substring(text, 5, -1), "/\\") if {
	lower(substring(text, 0, 5)) == "http:"
} else := trim_left(text, "/\\")

url_has_scheme(text) if lower(substring(text, 0, 6)) == "https:"

url_has_scheme(text) if lower(substring(text, 0, 5)) == "http:"

url_authority(rest) := split(split(split(split(rest, "/")[0], "\\")[0], "?")[0], "#")[0]

# The DNS name an authority ("user:pw@Host.Example:8080") names, if it names one.
authority_host(authority) := host if {
	parts := split(authority, "@")
	host_port := parts[count(parts) - 1]

	# Checked before lower(): Go lowers "İ" and the Kelvin sign to ASCII "i" and "k",
	# where IDNA gives another name.
	regex.match(`^[A-Za-z0-9.%-]+(:[0-9]*)?$`, host_port)
	name := percent_decoded(lower(split(host_port, ":")[0]))
	host := trim_suffix(name, ".")
	regex.match(`^[a-z0-9-]+(\.[a-z0-9-]+)+$`, host)
	not odd_ipv4(host)
}

# A name whose last label is a number is an IPv4 address to a browser ("0x7f.1" opens
# 127.0.0.1, "example.1" nothing): only the usual dotted form is read.
odd_ipv4(host) if {
	regex.match(`\.(0x[0-9a-f]*|[0-9]+)$`, host)
	not regex.match(`^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$`, host)
}

percent_decoded(name) := name if not contains(name, "%")

percent_decoded(name) := decoded if {
	contains(name, "%")
	pieces := split(name, "%")
	tails := [unescaped(piece) | some piece in array.slice(pieces, 1, count(pieces))]
	count(tails) == count(pieces) - 1
	decoded := concat("", array.concat([pieces[0]], tails))
}

# "61bc" -> "abc": the text after a "%", its escape decoded.
unescaped(piece) := concat("", [escaped_host_chars[substring(piece, 0, 2)], substring(piece, 2, -1)])

# The escapes a plain DNS name may hold, decoded (upper case read as lower case).
escaped_host_chars := {
	"2d": "-", "2e": ".", "30": "0", "31": "1", "32": "2", "33": "3", "34": "4", "35": "5",
	"36": "6", "37": "7", "38": "8", "39": "9", "41": "a", "42": "b", "43": "c", "44": "d",
	"45": "e", "46": "f", "47": "g", "48": "h", "49": "i", "4a": "j", "4b": "k", "4c": "l",
	"4d": "m", "4e": "n", "4f": "o", "50": "p", "51": "q", "52": "r", "53": "s", "54": "t",
	"55": "u", "56": "v", "57": "w", "58": "x", "59": "y", "5a": "z", "61": "a", "62": "b",
	"63": "c", "64": "d", "65": "e", "66": "f", "67": "g", "68": "h", "69": "i", "6a": "j",
	"6b": "k", "6c": "l", "6d": "m", "6e": "n", "6f": "o", "70": "p", "71": "q", "72": "r",
	"73": "s", "74": "t", "75": "u", "76": "v", "77": "w", "78": "x", "79": "y", "7a": "z",
}

# The host of a URL: what a browser would open.
url_host(value) := authority_host(url_authority(url_rest(url_text(value))))

# The site of a destination value that is a URL (it has an http(s) scheme, or a path, query
# or fragment after its host); a bare "bob@example.com" or "example.com" has none.
site(value) := url_host(value) if {
	text := url_text(value)
	url_like(text)
}

url_like(text) if url_has_scheme(text)

url_like(text) if {
	rest := url_rest(text)
	url_authority(rest) != rest
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

# Values a destination argument holds; anything but a string is unreadable. A string that
# lists several destinations ("a@x.test, b@y.test") counts as each of them.
field_values(field) := listed(args[field]) if is_string(args[field])

field_values(field) := [v | some item in args[field]; some v in listed_item(item)] if is_array(args[field])

listed_item(item) := listed(item) if is_string(item)

listed_item(item) := [item] if not is_string(item)

listed(text) := [trim_space(part) |
	some piece in split(text, ",")
	some part in split(piece, ";")
	trim_space(part) != ""
]

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
	count(canon(args[field])) > 2
	mentioned(args[field])
	some i in taint_positions
	some value in input.history[i].args
	is_string(value)
	specific(value)
	mentioned(value)
}

# A value that names a particular source (a site, an address, a channel, a number), not
# a word any request may hold ("summary", "the").
specific(value) if regex.match(`[./@#:0-9]`, canon(value))

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

# Every string a content argument holds, at any depth (a string, a list, an object such as
# Slack's Block Kit blocks: `[{"text": {"text": "<https://...|log in>"}}]`), and every key
# of an object in it: a renderer may show either.
content_strings contains value if {
	some field in egress.content
	walk(args[field], [_, value])
	is_string(value)
}

content_strings contains key if {
	some field in egress.content
	walk(args[field], [path, _])
	count(path) > 0
	key := path[count(path) - 1]
	is_string(key)
}

# What the link reading takes on is bounded, so that no content makes a decision outlast
# its timeout: content in more than max_content_strings strings, or with more than
# max_link_starts link starts in all its readings, is not read link by link but counted as
# a link nobody vouched for.
max_content_strings := 500

max_link_starts := 512

content_too_large if count(content_strings) > max_content_strings

unreadable_links contains "content in too many strings to read" if content_too_large

# Each string as written and as a renderer shows it: HTML character references of the
# characters a link is made of decoded ("https&colon;&#47;&#47;evil.test",
# "&#106;avascript:"), Markdown's backslash escapes dropped ("https\://evil.test"). Links
# are looked for in every reading.
rendered_texts contains text if {
	not content_too_large
	some text in content_strings
}

rendered_texts contains html_decoded(text) if {
	not content_too_large
	some text in content_strings
	contains(text, "&")
}

rendered_texts contains markdown_unescaped(text) if {
	not content_too_large
	some text in content_strings
	contains(text, "\\")
}

rendered_texts contains markdown_unescaped(decoded) if {
	not content_too_large
	some text in content_strings
	contains(text, "&")
	decoded := html_decoded(text)
	contains(decoded, "\\")
}

# The characters a link is made of, by code point: those of a URL's punctuation, "," and
# "=" (a mailto: link's lists and header fields), and the letters (a scheme:
# "&#106;avascript:").
link_chars := object.union(
	{
		"\t": 9, "\n": 10, "\r": 13, " ": 32, "#": 35, "%": 37, ",": 44, ".": 46, "/": 47,
		":": 58, "=": 61, "?": 63, "@": 64, "\\": 92,
	},
	{char: code |
		some i in numbers.range(0, 25)
		some [char, code] in [[substring(ascii_letters, i, 1), 97 + i], [upper(substring(ascii_letters, i, 1)), 65 + i]]
	},
)

ascii_letters := "abcdefghijklmnopqrstuvwxyz"

# Their numeric references without "&#" ("47", "x2f", "x2F"), leading zeros dropped.
char_refs contains [ref, char] if {
	some char, code in link_chars
	some ref in [
		format_int(code, 10),
		concat("", ["x", format_int(code, 16)]),
		concat("", ["x", upper(format_int(code, 16))]),
	]
}

# A URL parser drops tabs and line breaks wherever they are ("java&Tab;script:",
# "https://example.com&#10;@evil.test"): so are their references.
shown_char(char) := "" if char in {"\t", "\n", "\r"}

shown_char(char) := char if not char in {"\t", "\n", "\r"}

named_char_refs := {
	"&colon;": ":", "&sol;": "/", "&bsol;": "\\", "&period;": ".", "&commat;": "@",
	"&quest;": "?", "&num;": "#", "&percnt;": "%", "&Tab;": "", "&NewLine;": "",
	"&comma;": ",", "&equals;": "=",
}

refs_with_semicolon := object.union(
	{concat("", ["&#", ref, ";"]): shown_char(char) | some [ref, char] in char_refs},
	named_char_refs,
)

# Without the semicolon (HTML reads "&#47" too). One replacement takes, where several keys
# match, the first in sorted order: "&#10" (a line feed) would come before "&#106" ("j"),
# and "&#9" before "&#92", so those two are replaced last.
refs_without_semicolon := {concat("", ["&#", ref]): shown_char(char) |
	some [ref, char] in char_refs
	not ref in {"9", "10"}
}

# The text as an HTML renderer shows it, for the characters of a link ("&#0047;" too).
html_decoded(text) := strings.replace_n({"&#9": "", "&#10": ""}, strings.replace_n(
	refs_without_semicolon,
	strings.replace_n(refs_with_semicolon, regex.replace(regex.replace(text, `&#[xX]0*`, "&#x"), `&#0+`, "&#")),
))

# The text as a Markdown renderer shows it, for the characters of a link.
markdown_unescaped(text) := strings.replace_n(
	{"\\:": ":", "\\/": "/", "\\\\": "\\", "\\.": ".", "\\@": "@", "\\?": "?", "\\#": "#", "\\%": "%", "\\<": "<", "\\>": ">", "\\[": "[", "\\]": "]", "\\(": "(", "\\)": ")", "\\|": "|", "\\-": "-", "\\_": "_"},
	text,
)

# A URL delimited by an HTML attribute's quotes or by angle brackets (Markdown, Slack) may
# hold whitespace: a browser drops tabs and line breaks and keeps a space in the userinfo
# (`href="https://example.com x@evil.test/"` opens evil.test). Such a URL is read again
# with its whitespace removed. (`\\?` before a quote: the regopy fallback holds strings
# JSON-escaped.)
content_texts contains text if some text in rendered_texts

content_texts contains compact if {
	some text in rendered_texts
	some span in regex.find_n(
		`=\s*\\?"[^"]*|=\s*'[^']*|<\s*(?:[A-Za-z][A-Za-z0-9+.-]*:|[wW][wW][wW]\.|[/\\]{2})[^<>|]*`,
		text, -1,
	)
	regex.match(`\s`, span)
	compact := strings.replace_n({" ": "", "\t": "", "\n": "", "\r": "", "\f": ""}, span)
}

# A link: "http:" or "https:" with the slashes or backslashes a browser skips after it,
# "www.", another scheme with two slashes ("ftp://", "smb://"), or two slashes where a link
# may start (protocol-relative: `href="//evil.test"`, `[x](//evil.test)`); then its
# userinfo up to the last "@" of the authority (which may hold quotes and brackets: in an
# HTML attribute `href='https://example.com"@evil.test/'` opens evil.test), and the host.
# Written with explicit cases: (?i) would also match "ſ" and the Kelvin sign.
link_pattern := `(?:[hH][tT][tT][pP][sS]?:[/\\]*|[wW][wW][wW]\.|[A-Za-z][A-Za-z0-9+.-]*:[/\\]{2}|(?:^|[\s("'<=\[:;])[/\\]{2})(?:[^\s/\\?#@]*@)*[A-Za-z0-9.%:-]*`

# Where links are searched: each run of non-space characters that holds the start of
# one (a link never holds whitespace, so the search finds the same links as on the whole
# text). A search for a link reads on to the end of its run looking for an "@", so a run
# holding many link starts would cost its length for each of them: a run with more than
# max_run_link_starts of them is not searched but counted as a link that cannot be read (no
# URL holds that many), which keeps the search linear in the text. A link of a scheme
# without "//" (below) starts a link too, wherever its scheme name begins a word.
link_start := concat("|", [
	`[hH][tT][tT][pP][sS]?:|[wW][wW][wW]\.|[/\\]{2}`,
	concat("", [`\b(?:`, concat("|", [scheme_name(scheme) | some scheme in hostless_schemes]), `)[\t\n\r]*:\S`]),
])

max_run_link_starts := 64

# Every reading in one text, one per line: a link, a run or a link start never holds a
# line break (but where one parts the letters of a scheme name), so the text is searched
# once, whatever the number of readings. (A space begins each line: the regopy fallback
# holds a line break as "\n", which would carry on a word.)
content_text := concat("\n ", [text | some text in content_texts])

link_starts := count(regex.find_n(link_start, content_text, max_link_starts + 1))

unreadable_links contains "content with too many link starts to read" if {
	link_starts > max_link_starts
}

link_runs contains run if {
	link_starts <= max_link_starts
	some run in regex.find_n(concat("", [`\S*(?:`, link_start, `)\S*`]), content_text, -1)
}

readable_link_runs contains run if {
	some run in link_runs
	count(regex.find_n(link_start, run, max_run_link_starts + 1)) <= max_run_link_starts
}

unreadable_links contains "a run of text with too many link starts" if {
	some run in link_runs
	not run in readable_link_runs
}

link_hosts contains link if {
	some run in readable_link_runs
	some found in regex.find_n(link_pattern, run, -1)
	link := trim_left(found, " \t\n\r\f(\"'<=[:;")
	not lower(link) in {"http:", "https:", "www."} # the word, in prose
	trim_left(link, "/\\") != "" # "//" in prose
}

# Each link's host, where it has one; a link of another scheme is read from its slashes.
link_host := {link: host |
	some link in link_hosts
	url := regex.replace(trim_right(link, ".:"), `^[A-Za-z][A-Za-z0-9+.-]*:[/\\]{2}`, "//")
	host := url_host(url)
}

link_sites contains host if some host in link_host

# A link whose host cannot be read is a host nobody vouched for.
unreadable_links contains link if {
	some link in link_hosts
	not link_host[link]
}

# A link whose host goes on past what a plain name holds, where a browser would read on:
# a non-ASCII character (or a control character) that IDNA may map to a letter or a dot ("https://ours.test。com"
# opens ours.test.com), or a character a browser keeps in the host followed by more labels
# ("https://ours.test(x).evil.test"), or an "&" (a character reference: "https://ours.test&#46;evil.test").
# A link in brackets or before a comma is not one.
link_continues_past_host(text) if regex.match(
	`(?:[hH][tT][tT][pP][sS]?:[/\\]*|[wW][wW][wW]\.|[A-Za-z][A-Za-z0-9+.-]*:[/\\]{2}|(?:^|[\s("'<=\[:;])[/\\]{2})(?:[^\s/\\?#@]*@)*[A-Za-z0-9.%:-]*(?:[^ -~\t\n\f\r]|&|[^\s/\\?#@A-Za-z0-9.%:-][^\s/\\?#@]*\.[A-Za-z0-9])[^\s/\\?#@]*(?:[\s/\\?#]|$)`,
	text,
)

unreadable_links contains "a link whose host goes on" if link_continues_past_host(content_text)

unknown_link_sites contains host if {
	some host in link_sites
	not trusted(host)
}

unknown_link_sites contains link if some link in unreadable_links

unknown_link_sites contains address if some address in unknown_mail_addresses

# --- Links without "//" -------------------------------------------------------------
#
# A link of a scheme that names no host: "mailto:" (a message to the addresses it names),
# "javascript:" and "vbscript:" (code the browser runs), "data:" (a document carried in the
# link) and "file:" without "//" (a file on the reader's machine). Its scheme is read as a
# browser reads it: in any case, tabs and line breaks inside it dropped (an HTML renderer's
# "&Tab;" and "&#106;" decoded above). It counts as a link where its name begins a word that
# no scheme, word or path carries on (after the start of the text, a space or a control
# character, a quote, "<", "(", "=", ":" ...; not "x-data:", "my_data:" or ".../data:") and a
# non-space character follows its ":" ("the data: 42 rows", "mailto: below" are prose).
hostless_schemes := ["mailto", "javascript", "vbscript", "data", "file"]

# A scheme name in any case, tabs and line breaks allowed between its letters:
# "[dD][\t\n\r]*[aA][\t\n\r]*[tT][\t\n\r]*[aA]".
scheme_name(scheme) := concat(`[\t\n\r]*`, [concat("", ["[", c, upper(c), "]"]) | some c in split(scheme, "")])

scheme_boundary := `(?:^|[^A-Za-z0-9+._/\\-])`

# javascript:, vbscript:, data: and file: (but "file://", a host's, read above) links: nobody
# vouches for them.
script_link_pattern := concat("", [
	scheme_boundary, `(?:(?:`,
	concat("|", [scheme_name("javascript"), scheme_name("vbscript"), scheme_name("data")]),
	`)[\t\n\r]*:\S|`, scheme_name("file"), `[\t\n\r]*:(?:[^\s/\\]|[/\\][^\s/\\]))`,
])

unreadable_links contains "a javascript:, vbscript:, data: or file: link" if {
	regex.match(script_link_pattern, content_text)
}

# A mailto: link runs to a space, ">" or "|" (the end of `<mailto:...>` or Slack's
# `<mailto:...|name>`), ")" or "]" (Markdown); quotes and what ends a sentence are dropped
# from its end. A "<" or "(" goes on: "bob@example.com<eve@evil.test>" is one address, not
# one of ours.
mailto_link_pattern := concat("", [scheme_boundary, scheme_name("mailto"), `[\t\n\r]*:[^\s>|)\]]+`])

# What follows the ":" of each mailto: link (at most as many as the link starts).
mailto_bodies contains trim_right(substring(found, colon + 1, -1), "\"'`.,;:!?\\") if {
	link_starts <= max_link_starts
	some found in regex.find_n(mailto_link_pattern, content_text, max_link_starts + 1)

	# The first ":" after the character before the scheme, which may be one.
	colon := indexof(substring(found, 1, -1), ":") + 1
}

# The parts of a mailto: link that name addresses: the part before "?" ("a@x.test,b@y.test")
# and the value of every header field after it but "subject" and "body" ("cc=", "bcc=",
# "to=", and any other a mail client may read), a field's name read with its escapes
# decoded, in any case, and without the "amp;" of an "&amp;" as written in HTML.
mailto_address_texts contains split(body, "?")[0] if {
	not mailto_too_many_parts
	some body in mailto_bodies
}

mailto_address_texts contains value if {
	not mailto_too_many_parts
	some body in mailto_bodies
	query := substring(body, indexof(body, "?") + 1, -1)
	indexof(body, "?") >= 0
	some field in split(query, "&")
	name := split(field, "=")[0]
	not mail_text_field(name)
	value := trim_prefix(substring(field, count(name), -1), "=")
}

mail_text_field(name) if lower(trim_prefix(mail_decoded(name), "amp;")) in {"subject", "body"}

# The addresses of all mailto: links are read only up to max_mailto_parts separators
# ("," ";" "&") in all: past that, the links count as a link nobody vouched for.
max_mailto_parts := 256

mailto_too_many_parts if {
	count(regex.find_n(`[,;&]`, concat("\n", mailto_bodies), max_mailto_parts + 1)) > max_mailto_parts
}

unreadable_links contains "mailto: links with too many addresses to read" if mailto_too_many_parts

# Each address, percent-escapes decoded ("bob%40example.com"), must be one the request
# names (as a whole word) or the directory vouches for (an "@example.com" entry too), and an
# address at all (a name, an "@", a domain: "bob", cut from "bob(x)@evil.test", is none).
unknown_mail_addresses contains address if {
	some text in mailto_address_texts
	some address in listed(mail_decoded(text))
	not trusted_address(address)
}

# A part holding an escape of a space or a control character, or a "%" that is no escape.
unknown_mail_addresses contains text if {
	some text in mailto_address_texts
	not mail_decoded(text)
}

trusted_address(address) if {
	regex.match(`^[^@]+@[^@]+$`, address)
	mentioned(address)
}

trusted_address(address) if {
	regex.match(`^[^@]+@[^@]+$`, address)
	in_directory(address)
}

# The text with its percent-escapes of printable ASCII characters decoded; undefined when it
# holds another escape, or a "%" that is none.
mail_decoded(text) := text if not contains(text, "%")

mail_decoded(text) := decoded if {
	contains(text, "%")
	pieces := split(text, "%")
	tails := [concat("", [mail_escapes[substring(piece, 0, 2)], substring(piece, 2, -1)]) |
		some piece in array.slice(pieces, 1, count(pieces))
	]
	count(tails) == count(pieces) - 1
	decoded := concat("", array.concat([pieces[0]], tails))
}

# "40" -> "@", "2C" and "2c" -> ",": escapes of the characters "!" (0x21) to "~" (0x7e). (The
# quote and the backslash are written apart: the regopy fallback holds them escaped in a
# string, two characters long.)
mail_escapes := object.union(
	{hex: substring(chars, i, 1) |
		some [first, chars] in [[33, "!"], [35, "#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ["], [93, "]^_`abcdefghijklmnopqrstuvwxyz{|}~"]]
		some i in numbers.range(0, count(chars) - 1)
		some hex in {format_int(first + i, 16), upper(format_int(first + i, 16))}
	},
	{"22": "\"", "5c": "\\", "5C": "\\"},
)

deny contains {"code": "link_not_requested", "message": message} if {
	egress
	tainted
	count(unknown_link_sites) > 0
	message := concat("", [
		"\"", name, "\" would send a link to a site that is neither in the user's request nor in the trusted directory, after untrusted content was read (",
		sources_text, ")",
	])
}

# --- Destructive calls -------------------------------------------------------

approval contains {"code": "destructive_after_untrusted", "message": message} if {
	destructive
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
