package main

import (
	"slices"
	"testing"
)

func TestMedianRoundsPicksTheMiddleRunAndKeepsAll(t *testing.T) {
	row := func(system string, clients int, ops, p99 float64) result {
		return result{Name: "controlplane.append", System: system, Clients: clients, OpsPerSec: ops, P99ms: p99}
	}
	got := medianRounds([][]result{
		{row("hivemind", 64, 500, 9), row("hivemind", 1000, 900, 90)},
		{row("etcd", 64, 300, 30)},
		{row("etcd", 64, 100, 50)},
		{row("hivemind", 64, 700, 7), row("hivemind", 1000, 800, 80)},
		{row("hivemind", 64, 600, 8)},
		{row("etcd", 64, 200, 40)},
	})
	if len(got) != 3 {
		t.Fatalf("got %d rows, want 3 (hivemind 64, hivemind 1000, etcd 64): %+v", len(got), got)
	}
	h64, h1000, e64 := got[0], got[1], got[2]
	if h64.OpsPerSec != 600 || h64.P99ms != 8 || h64.Rounds != 3 {
		t.Errorf("hivemind 64: %+v, want the 600 ops/s round with its p99 8", h64)
	}
	if !slices.Equal(h64.OpsPerSecRuns, []float64{500, 700, 600}) {
		t.Errorf("hivemind 64 runs %v, want them in round order", h64.OpsPerSecRuns)
	}
	if h1000.OpsPerSec != 800 || h1000.Rounds != 2 {
		t.Errorf("hivemind 1000: %+v, want the lower middle (800) of two", h1000)
	}
	if e64.OpsPerSec != 200 || e64.P99ms != 40 {
		t.Errorf("etcd 64: %+v, want the 200 ops/s round", e64)
	}
}
