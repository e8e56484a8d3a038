package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// result is one row of the benchmark output.
type result struct {
	Name      string  `json:"name"`
	System    string  `json:"system"`
	Clients   int     `json:"clients"`
	Ops       int64   `json:"ops"`
	Errors    int64   `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	Seconds   float64 `json:"seconds"`
	Payload   int     `json:"payload_bytes"`
	Watchers  int     `json:"watchers,omitempty"`
	// Replicas is the number of notifier replicas (notifier rows).
	Replicas int `json:"replicas,omitempty"`
	// FalsePositives counts live members declared dead (membership rows).
	FalsePositives *int   `json:"false_positives,omitempty"`
	Note           string `json:"note,omitempty"`
	Time           string `json:"time"`

	// AvgMs, StdDevMs and MinMs are given where the tool measuring reports
	// them instead of percentiles (dnsperf).
	AvgMs    float64 `json:"avg_ms,omitempty"`
	StdDevMs float64 `json:"stddev_ms,omitempty"`
	MinMs    float64 `json:"min_ms,omitempty"`

	// Rounds is how many runs the row summarises (controlplane rows: the
	// median run by throughput), OpsPerSecRuns the throughput of each.
	Rounds        int       `json:"rounds,omitempty"`
	OpsPerSecRuns []float64 `json:"ops_per_sec_runs,omitempty"`

	// Fleet rows: the fleet's size, a process's resident memory and CPU
	// time, memory per host beyond the process before the fleet joined,
	// and a size on disk.
	Hosts        int     `json:"hosts,omitempty"`
	RSSBytes     int64   `json:"rss_bytes,omitempty"`
	BytesPerHost float64 `json:"bytes_per_host,omitempty"`
	CPUSeconds   float64 `json:"cpu_seconds,omitempty"`
	Bytes        int64   `json:"bytes,omitempty"`

	// ServerCPUusPerOp and ClientCPUusPerOp are the CPU time (user and
	// system) the servers and the load generator spent per successful
	// operation over the step, in microseconds. On a machine the two share,
	// their sum bounds the throughput: cores / sum.
	ServerCPUusPerOp float64 `json:"server_cpu_us_per_op,omitempty"`
	ClientCPUusPerOp float64 `json:"client_cpu_us_per_op,omitempty"`
}

// opRate, when positive, caps the operations per second of a load step
// (all clients together), so that CPU per operation can be compared at the
// same load instead of at saturation (-rate).
var opRate float64

// measured runs step and adds the CPU the servers (when known) and this
// process spent per successful operation.
func measured(servers *procs, step func() result) result {
	s0, c0 := servers.cpu(), selfCPU()
	r := step()
	s1, c1 := servers.cpu(), selfCPU()
	if r.Ops > 0 {
		if servers != nil {
			r.ServerCPUusPerOp = float64((s1 - s0).Microseconds()) / float64(r.Ops)
		}
		r.ClientCPUusPerOp = float64((c1 - c0).Microseconds()) / float64(r.Ops)
	}
	return r
}

// selfCPU is the user and system time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// closedLoop runs clients goroutines, each issuing op back to back for d,
// and reports throughput and latency percentiles of successful ops.
func closedLoop(ctx context.Context, clients int, d time.Duration, op func(ctx context.Context) error) result {
	// Each operation gets its own timeout rather than the step's deadline,
	// so the end of a step does not turn the last calls into errors.
	end := time.Now().Add(d)
	var errs atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	var limit *rate.Limiter
	if opRate > 0 {
		limit = rate.NewLimiter(rate.Limit(opRate), 1)
	}
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for time.Now().Before(end) {
				if limit != nil && limit.Wait(ctx) != nil {
					return
				}
				opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t := time.Now()
				err := op(opCtx)
				cancel()
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat[i] = append(lat[i], time.Since(t))
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	r := summarize(all)
	r.Clients = clients
	r.Errors = errs.Load()
	if e, ok := firstErr.Load().(string); ok {
		r.Note = "first error: " + e
	}
	r.Seconds = elapsed.Seconds()
	r.OpsPerSec = float64(len(all)) / elapsed.Seconds()
	return r
}

func summarize(all []time.Duration) result {
	slices.Sort(all)
	r := result{Ops: int64(len(all))}
	if len(all) > 0 {
		r.P50ms = ms(all[len(all)*50/100])
		r.P99ms = ms(all[min(len(all)-1, len(all)*99/100)])
		r.MaxMs = ms(all[len(all)-1])
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// medianRounds merges rows of the same name, system, clients and watchers
// from several rounds into the round with the median throughput (the lower
// middle one for an even count), keeping every round's throughput.
func medianRounds(runs [][]result) []result {
	type key struct {
		name, system      string
		clients, watchers int
	}
	var order []key
	groups := map[key][]result{}
	for _, run := range runs {
		for _, r := range run {
			k := key{r.Name, r.System, r.Clients, r.Watchers}
			if _, ok := groups[k]; !ok {
				order = append(order, k)
			}
			groups[k] = append(groups[k], r)
		}
	}
	out := make([]result, 0, len(order))
	for _, k := range order {
		g := groups[k]
		all := make([]float64, len(g))
		for i, r := range g {
			all[i] = r.OpsPerSec
		}
		slices.SortStableFunc(g, func(a, b result) int { return cmp.Compare(a.OpsPerSec, b.OpsPerSec) })
		m := g[(len(g)-1)/2]
		m.Rounds, m.OpsPerSecRuns = len(g), all
		out = append(out, m)
	}
	return out
}

// printRatios prints hivemind's throughput over etcd's for every client
// count both were measured at: per round (the two ran minutes apart on the
// same machine) and for the median rows.
func printRatios(rs []result) {
	byKey := map[string]map[int]result{}
	for _, r := range rs {
		if r.Name != "controlplane.append" {
			continue
		}
		if byKey[r.System] == nil {
			byKey[r.System] = map[int]result{}
		}
		byKey[r.System][r.Clients] = r
	}
	var counts []int
	for c := range byKey["hivemind"] {
		if _, ok := byKey["etcd"][c]; ok {
			counts = append(counts, c)
		}
	}
	if len(counts) == 0 {
		return
	}
	slices.Sort(counts)
	fmt.Println("| clients | hivemind ÷ etcd, ops/s per round | median rows | p99 hivemind / etcd ms |")
	fmt.Println("|---:|---|---:|---|")
	for _, c := range counts {
		h, e := byKey["hivemind"][c], byKey["etcd"][c]
		var per []string
		for i := range min(len(h.OpsPerSecRuns), len(e.OpsPerSecRuns)) {
			if e.OpsPerSecRuns[i] > 0 {
				per = append(per, fmt.Sprintf("%.2f×", h.OpsPerSecRuns[i]/e.OpsPerSecRuns[i]))
			}
		}
		ratio := 0.0
		if e.OpsPerSec > 0 {
			ratio = h.OpsPerSec / e.OpsPerSec
		}
		fmt.Printf("| %d | %s | %.2f× | %.1f / %.1f |\n", c, strings.Join(per, ", "), ratio, h.P99ms, e.P99ms)
	}
	fmt.Println()
}
