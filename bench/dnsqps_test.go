package main

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// dnsperf 2.10's summary, as it prints it.
const dnsperfOutput = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 5300 -d q.txt -c 4 -T 2 -l 5
[Status] Sending queries (to 127.0.0.1:5300)
[Status] Started at: Mon Nov 23 18:00:00 2026
[Status] Stopping after 5.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         716055
  Queries completed:    716050 (100.00%)
  Queries lost:         5 (0.00%)

  Response codes:       NOERROR 662351 (92.50%), NXDOMAIN 53704 (7.50%)
  Average packet size:  request 34, response 88
  Run time (s):         5.001373
  Queries per second:   143172.412345

  Average Latency (s):  0.000525 (min 0.000012, max 0.029471)
  Latency StdDev (s):   0.000582

`

func TestParseDNSPerf(t *testing.T) {
	s, err := parseDNSPerf(dnsperfOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := dnsperfStats{
		Sent: 716055, Completed: 716050, Lost: 5, QPS: 143172.412345, RunSeconds: 5.001373,
		AvgMs: 0.525, StdDevMs: 0.582, MinMs: 0.012, MaxMs: 29.471,
		Rcodes: "NOERROR 662351 (92.50%), NXDOMAIN 53704 (7.50%)",
	}
	near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
	if s.Sent != want.Sent || s.Completed != want.Completed || s.Lost != want.Lost || s.Rcodes != want.Rcodes ||
		!near(s.QPS, want.QPS) || !near(s.RunSeconds, want.RunSeconds) || !near(s.AvgMs, want.AvgMs) ||
		!near(s.StdDevMs, want.StdDevMs) || !near(s.MinMs, want.MinMs) || !near(s.MaxMs, want.MaxMs) {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
	if _, err := parseDNSPerf("dnsperf: invalid argument"); err == nil {
		t.Error("output without a summary parsed")
	}
}

// TestQPSZoneFile checks the zone file NSD serves answers every query of
// the dnsperf input the way the query expects.
func TestQPSZoneFile(t *testing.T) {
	z := newQPSZone(1000)
	sets := map[string]map[uint16]int{}
	zp := dns.NewZoneParser(strings.NewReader(z.zoneFile(7)), "", "hive.zone")
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		h := rr.Header()
		if sets[h.Name] == nil {
			sets[h.Name] = map[uint16]int{}
		}
		sets[h.Name][h.Rrtype]++
	}
	if err := zp.Err(); err != nil {
		t.Fatal(err)
	}
	exists := func(name string) bool {
		for n := range sets {
			if dns.IsSubDomain(name, n) {
				return true // the name or an empty non-terminal above n
			}
		}
		return false
	}
	qs := z.queries()
	if len(qs) != 2000 {
		t.Errorf("%d queries, want 2000 (the shares in queryMix)", len(qs))
	}
	for _, q := range qs {
		rcode := dns.RcodeSuccess
		if !exists(q.name) {
			rcode = dns.RcodeNameError
		}
		if n := sets[q.name][q.qtype]; rcode != q.rcode || n != q.answers {
			t.Errorf("%s: zone file gives %s with %d records, query expects %s with %d",
				q.line(), dns.RcodeToString[rcode], n, dns.RcodeToString[q.rcode], q.answers)
		}
	}
}
