# String, number and set builtins over odd input, for the engine parity corpus.
# Each key of `results` is one builtin call; a call that is undefined leaves its key out.
package corpus

results["upper"] := upper(input.s)

results["lower"] := lower(input.s)

results["count"] := count(input.s)

results["trim_space"] := trim_space(input.s)

results["split"] := split(input.s, ",")

results["concat"] := concat("|", [input.s, input.t])

results["startswith"] := startswith(input.s, input.t)

results["contains"] := contains(input.s, input.t)

# Known gaps of OPA's WebAssembly compiler, kept out here and pinned in
# test_wasm_engine.py: indexof() with an empty needle is 0 (OPA: undefined),
# json.marshal() does not escape <, > and & (OPA: \u003c ...).
results["indexof"] := indexof(input.s, input.t) if input.t != ""

results["substring"] := substring(input.s, 1, 3)

# OPA's wasm replace() loops forever on an empty pattern: kept out here, and tested as
# a fail-closed timeout in test_wasm_engine.py.
results["replace"] := replace(input.s, input.t, "<>") if input.t != ""

results["reverse"] := strings.reverse(input.s)

results["equal"] := input.s == input.t

results["less"] := input.s < input.t

results["regex"] := regex.match(input.re, input.s)

results["regex_tab"] := regex.match(`\t`, input.s)

results["regex_letters"] := regex.match(`^\pL+$`, input.s)

# Builtins the embedded engine provides itself (the wasm module calls out for them).
results["indexof_n"] := indexof_n(input.s, input.t)

results["indexof_n_needle"] := indexof_n(concat("", [input.s, input.needle, input.needle]), input.needle)

results["find_n"] := regex.find_n(input.re2, input.s, input.k)

results["find_words"] := regex.find_n(`\w+`, input.s, -1)

results["find_spaces"] := regex.find_n(`\s`, input.s, -1)

results["replace_re"] := regex.replace(input.s, input.re2, input.tmpl)

results["replace_boundary"] := regex.replace(input.s, `\b`, "|")

results["replace_scheme"] := regex.replace(concat(" ", [input.t, "HTTPS://x", "https://y"]), `https?://`, "")

results["sprintf_s"] := sprintf("<%s|%s>", [input.s, input.t])

results["sprintf_q"] := sprintf("%q", [input.s])

results["sprintf_v"] := sprintf("%v %v %v", [input.n, input.arr, input_set])

results["sprintf_d"] := sprintf("%d|%5d|%-4d|%x|%.2f|%e", [input.i, input.i, input.i, input.i, input.n, input.n])

results["sprintf_mixed"] := sprintf(input.fmt, input.args)

results["json"] := json.marshal(input.arr) if {
	every x in input.arr {
		not regex.match(`[<>&]`, sprintf("%v", [x]))
	}
}

results["set_sorted"] := sort(input_set)

results["set_union"] := input_set | {input.s}

results["set_count"] := count(input_set | {input.t})

results["plus"] := input.n + 1

results["times"] := input.n * 3

results["divide"] := input.n / 4

results["round"] := round(input.n)

results["abs"] := abs(input.n)

results["to_number"] := to_number(input.numtext)

results["format_int"] := format_int(input.i, 16)

results["compare"] := input.n < input.i

results["number_set"] := {input.n, input.i, 1}

results["object_keys"] := {k | some k; input.obj[k]}

input_set := {x | some x in input.set}
