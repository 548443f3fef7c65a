// Command promql-selectors parses PromQL queries with Prometheus's own parser and lists the metric
// names each one selects, so a test can check a dashboard names only series the operator exports.
// promtool has no subcommand that does both (`promql format` is experimental and lists no names).
//
// Input: one query per line on stdin. Output: one JSON object per query,
// {"query": "...", "metrics": ["..."]}, or {"query": "...", "error": "..."}; the exit status is 1
// when any query does not parse.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Query   string   `json:"query"`
	Metrics []string `json:"metrics,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// metricNames returns the metric names of every vector selector in expr; a selector without a
// fixed name (no name, or a regex on __name__) is reported as "" so the caller can refuse it.
func metricNames(expr parser.Expr) []string {
	var names []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		selector, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := selector.Name
		for _, m := range selector.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
		return nil
	})
	return names
}

func main() {
	p := parser.NewParser(parser.Options{})
	out := json.NewEncoder(os.Stdout)
	failed := false
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for scanner.Scan() {
		query := strings.TrimSpace(scanner.Text())
		if query == "" {
			continue
		}
		r := result{Query: query}
		if expr, err := p.ParseExpr(query); err != nil {
			r.Error = err.Error()
			failed = true
		} else {
			r.Metrics = metricNames(expr)
		}
		if err := out.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
