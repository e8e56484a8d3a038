package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// dnsperfStats is what dnsperf's summary reports. It gives the average,
// standard deviation, minimum and maximum latency, no percentiles.
type dnsperfStats struct {
	Sent, Completed, Lost int64
	QPS                   float64
	RunSeconds            float64
	AvgMs, StdDevMs       float64
	MinMs, MaxMs          float64
	Rcodes                string // "NOERROR 123 (80.00%), NXDOMAIN …" as printed
}

var (
	dpSent      = regexp.MustCompile(`Queries sent:\s+(\d+)`)
	dpCompleted = regexp.MustCompile(`Queries completed:\s+(\d+)`)
	dpLost      = regexp.MustCompile(`Queries lost:\s+(\d+)`)
	dpQPS       = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	dpRun       = regexp.MustCompile(`Run time \(s\):\s+([0-9.]+)`)
	dpLatency   = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)\s+\(min ([0-9.]+), max ([0-9.]+)\)`)
	dpStdDev    = regexp.MustCompile(`Latency StdDev \(s\):\s+([0-9.]+)`)
	dpRcodes    = regexp.MustCompile(`Response codes:\s+(.*)`)
)

// parseDNSPerf reads dnsperf's summary. Queries per second is required;
// the rest is taken when present.
func parseDNSPerf(out string) (dnsperfStats, error) {
	var s dnsperfStats
	num := func(re *regexp.Regexp, i int) (float64, bool) {
		m := re.FindStringSubmatch(out)
		if m == nil {
			return 0, false
		}
		v, err := strconv.ParseFloat(m[i], 64)
		return v, err == nil
	}
	qps, ok := num(dpQPS, 1)
	if !ok {
		return s, fmt.Errorf("no \"Queries per second\" in dnsperf's output:\n%s", out)
	}
	s.QPS = qps
	v, _ := num(dpSent, 1)
	s.Sent = int64(v)
	v, _ = num(dpCompleted, 1)
	s.Completed = int64(v)
	v, _ = num(dpLost, 1)
	s.Lost = int64(v)
	s.RunSeconds, _ = num(dpRun, 1)
	if v, ok := num(dpLatency, 1); ok {
		lo, _ := num(dpLatency, 2)
		hi, _ := num(dpLatency, 3)
		s.AvgMs, s.MinMs, s.MaxMs = v*1000, lo*1000, hi*1000
	}
	if v, ok := num(dpStdDev, 1); ok {
		s.StdDevMs = v * 1000
	}
	if m := dpRcodes.FindStringSubmatch(out); m != nil {
		s.Rcodes = strings.TrimSpace(m[1])
	}
	return s, nil
}

// runDNSPerf runs dnsperf against addr ("host:port") with the query file
// and the extra arguments (-c, -T, -l, -Q, …).
func runDNSPerf(ctx context.Context, bin, addr, queryFile string, args []string) (dnsperfStats, error) {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return dnsperfStats{}, fmt.Errorf("dnsperf: address %q has no port", addr)
	}
	argv := append([]string{"-s", host, "-p", port, "-d", queryFile}, args...)
	out, err := exec.CommandContext(ctx, bin, argv...).CombinedOutput()
	if err != nil {
		return dnsperfStats{}, fmt.Errorf("dnsperf %s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return parseDNSPerf(string(out))
}
