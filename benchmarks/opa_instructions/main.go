// Command opa_instructions evaluates one OPA query N times in process, with OPA's own Go
// evaluator (the rego package, as `opa bench` does), so that valgrind's callgrind can count
// the instructions of a decision: run it once with N=0 and once with N=1000 and divide the
// difference by 1000. It prints the last result as JSON on stdout and the allocations per
// evaluation on stderr.
//
//	opa_instructions <policy dir> <input.json> <N> [query]
//
// Files named *_test.rego are left out, as `opa bench --ignore '*_test.rego'` does.
// benchmarks/bench_engines.py builds and runs it (with GOGC=off, so that no garbage
// collection lands in one run and not the other).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: opa_instructions <policy dir> <input.json> <N> [query]")
		os.Exit(2)
	}
	dir, inputFile := os.Args[1], os.Args[2]
	n, err := strconv.Atoi(os.Args[3])
	if err != nil || n < 0 {
		fmt.Fprintln(os.Stderr, "N must be a whole number")
		os.Exit(2)
	}
	query := "data.agent.authz.decision"
	if len(os.Args) > 4 {
		query = os.Args[4]
	}
	loaded, err := loader.NewFileLoader().Filtered([]string{dir}, func(_ string, info os.FileInfo, _ int) bool {
		return !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
	})
	if err != nil {
		fail(err)
	}
	options := []func(*rego.Rego){rego.Query(query), rego.Store(inmem.NewFromObject(loaded.Documents))}
	for _, module := range loaded.Modules {
		options = append(options, rego.ParsedModule(module.Parsed))
	}
	ctx := context.Background()
	prepared, err := rego.New(options...).PrepareForEval(ctx)
	if err != nil {
		fail(err)
	}
	raw, err := os.ReadFile(inputFile)
	if err != nil {
		fail(err)
	}
	var document any
	if err := json.Unmarshal(raw, &document); err != nil {
		fail(err)
	}
	// Converted once, as `opa bench` does: a decision's cost, not the input's conversion.
	input, err := ast.InterfaceToValue(document)
	if err != nil {
		fail(err)
	}
	var results rego.ResultSet
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	before := stats.Mallocs
	for i := 0; i < n; i++ {
		if results, err = prepared.Eval(ctx, rego.EvalParsedInput(input)); err != nil {
			fail(err)
		}
	}
	runtime.ReadMemStats(&stats)
	if n > 0 {
		fmt.Fprintf(os.Stderr, "allocs/op %d\n", (stats.Mallocs-before)/uint64(n))
		if len(results) == 0 || len(results[0].Expressions) == 0 {
			fail(fmt.Errorf("%s is undefined for this input", query))
		}
		out, _ := json.Marshal(results[0].Expressions[0].Value)
		fmt.Println(string(out))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
