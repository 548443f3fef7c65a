//go:build tools

// Package tools pins promtool, which the chart's PrometheusRule tests run (`promtool test rules`).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
