package dnsserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// TestCacheDropsChangedNamesOnly fills a cache, changes one host, and
// checks that only the answers of the names that host is part of are
// dropped; then a change with a new revision also drops every answer
// carrying the SOA.
func TestCacheDropsChangedNamesOnly(t *testing.T) {
	s := hoststate.New()
	put := func(host, addr string, seq, rev uint64) {
		mustApply(t, s, hoststate.Update{Op: hoststate.Put, Host: host, Seq: seq, Revision: rev, Record: &hoststate.Host{
			Addrs:    addrs(addr),
			Services: []hoststate.Service{{Name: host[:3], Port: 80, Health: hoststate.Passing}},
		}})
	}
	put("web1", "10.0.0.1", 1, 10)
	put("web2", "10.0.0.2", 1, 11)
	put("dbs1", "10.0.0.3", 1, 12)
	h := newHandler(t, testConfig(), s.Snapshot())
	c := newAnswerCache()
	c.sync(h.Generation(), h.Changed)
	qs := map[string]*dns.Msg{
		"web2 A":       query("web2.node.hive.", dns.TypeA),
		"web A":        query("WEB.service.hive.", dns.TypeA),
		"web SRV":      query("_web._tcp.service.hive.", dns.TypeSRV),
		"web1 A":       query("web1.node.hive.", dns.TypeA),
		"dbs A":        query("dbs.service.hive.", dns.TypeA),
		"nope A":       query("nope.node.hive.", dns.TypeA),
		"web1 AAAA":    query("web1.node.hive.", dns.TypeAAAA),
		"outside zone": query("example.org.", dns.TypeA),
	}
	fill := func() {
		for _, q := range qs {
			p, _ := q.Pack()
			m := h.Reply(q.Copy(), true)
			wire, _ := m.Pack()
			c.put(p, wire, m)
		}
	}
	cached := func() []string {
		var out []string
		buf := make([]byte, 4096)
		for name, q := range qs {
			p, _ := q.Pack()
			if c.get(p, buf, h.Shuffle) != nil {
				out = append(out, name)
			}
		}
		slices.Sort(out)
		return out
	}
	fill()
	if got := cached(); len(got) != len(qs) {
		t.Fatalf("cached %v, want all %d", got, len(qs))
	}

	// The fast path: a new address for web2, no new revision.
	put("web2", "10.0.0.22", 2, 0)
	if err := h.Update(context.Background(), s.Snapshot()); err != nil {
		t.Fatal(err)
	}
	c.sync(h.Generation(), h.Changed)
	want := []string{"dbs A", "nope A", "outside zone", "web1 A", "web1 AAAA"}
	if got := cached(); !slices.Equal(got, want) {
		t.Errorf("after a change to web2 cached %v, want %v", got, want)
	}

	// The durable path: a new revision moves the SOA serial, which every
	// negative answer carries.
	fill()
	put("dbs1", "10.0.0.33", 2, 13)
	if err := h.Update(context.Background(), s.Snapshot()); err != nil {
		t.Fatal(err)
	}
	c.sync(h.Generation(), h.Changed)
	want = []string{"outside zone", "web A", "web SRV", "web1 A", "web2 A"}
	if got := cached(); !slices.Equal(got, want) {
		t.Errorf("after a change to dbs1 at a new revision cached %v, want %v", got, want)
	}
}

// TestServerNeverServesStale changes random hosts while asking the same
// questions over UDP: after each change is applied, every answer the
// server gives (most from its cache) must equal what Reply gives from the
// new zone.
func TestServerNeverServesStale(t *testing.T) {
	s := hoststate.New()
	h := newHandler(t, testConfig(), s.Snapshot())
	srv := startServer(t, h)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	hosts := []string{"a", "b", "c", "d"}
	var qs []*dns.Msg
	for _, n := range hosts {
		qs = append(qs, query(n+".node.hive.", dns.TypeA), query(n+".node.hive.", dns.TypeTXT))
	}
	for _, n := range []string{"web", "db"} {
		qs = append(qs, query(n+".service.hive.", dns.TypeA), query("_"+n+"._tcp.service.hive.", dns.TypeSRV),
			query("primary."+n+".service.hive.", dns.TypeA))
	}
	qs = append(qs, query("hive.", dns.TypeSOA), query("node.hive.", dns.TypeA), query("service.hive.", dns.TypeNS))
	rng := rand.New(rand.NewPCG(3, 4))
	seqs := map[string]uint64{}
	for step := range 150 {
		host := hosts[rng.IntN(len(hosts))]
		seqs[host]++
		u := hoststate.Update{Op: hoststate.Put, Host: host, Seq: seqs[host], Revision: uint64(step) * uint64(rng.IntN(2)),
			Record: &hoststate.Host{Addrs: addrs(fmt.Sprintf("10.0.0.%d", rng.IntN(4))), Meta: map[string]string{"k": fmt.Sprint(rng.IntN(3))}}}
		for range rng.IntN(3) {
			svc := hoststate.Service{Name: []string{"web", "db"}[rng.IntN(2)], Port: 80, Health: hoststate.Health(rng.IntN(3))}
			if rng.IntN(2) == 0 {
				svc.Tags = []string{"primary"}
			}
			u.Record.Services = append(u.Record.Services, svc)
		}
		switch rng.IntN(6) {
		case 0:
			u = hoststate.Update{Op: hoststate.Delete, Host: host, Seq: seqs[host], Revision: u.Revision}
		case 1:
			u = hoststate.Update{Op: hoststate.Failed, Host: host, Time: 1 << 40, Revision: u.Revision}
		case 2:
			u = hoststate.Update{Op: hoststate.Alive, Host: host, Revision: u.Revision}
		}
		mustApply(t, s, u)
		if err := h.Update(context.Background(), s.Snapshot()); err != nil {
			t.Fatal(err)
		}
		for round := range 2 { // the second round is answered from the cache
			for _, q := range qs {
				want := h.Reply(q.Copy(), true)
				got, _, err := c.Exchange(q.Copy(), srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				if got.Rcode != want.Rcode || fmtRRs(sorted(got.Answer)) != fmtRRs(sorted(want.Answer)) ||
					fmtRRs(got.Ns) != fmtRRs(want.Ns) || fmtRRs(sorted(got.Extra)) != fmtRRs(sorted(want.Extra)) {
					t.Fatalf("step %d round %d, after %s %s: %s answered\n%v\nwant\n%v", step, round, u.Op, host, q.Question[0].String(), got, want)
				}
			}
		}
	}
}
