# regex.find_n, regex.replace and indexof_n over a list of cases, for the parity test of
# the builtins the embedded engine provides itself. An undefined call leaves its key out.
package regex_cases

find[i] := regex.find_n(c.pattern, c.text, c.n) if some i, c in input.cases

replace[i] := regex.replace(c.text, c.pattern, c.template) if some i, c in input.cases

positions[i] := indexof_n(c.text, c.needle) if some i, c in input.cases

results := {"find": find, "replace": replace, "positions": positions}

# A decision that matches its input against a pattern the input gives.
decision := {"allow": true, "reasons": regex.find_n(input.pattern, input.text, -1)}
