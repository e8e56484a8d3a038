package dnsserver

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestServerCache asks the same questions many times over UDP, so most
// answers come from the UDP loop's cache: each has the ID it was asked
// with, the records Reply gives, and the answer records in varying order.
func TestServerCache(t *testing.T) {
	cfg := testConfig()
	cfg.Shuffle = nil // the default, random order
	h := newHandler(t, cfg, big(t, 6))
	s := startServer(t, h)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	for _, q := range []*dns.Msg{
		query("big.service.hive.", dns.TypeA),
		query("_big._tcp.service.hive.", dns.TypeSRV),
		withEDNS(query("_big._tcp.service.hive.", dns.TypeSRV), 1232, true, 0),
		query("h002.node.hive.", dns.TypeA),
		query("nope.node.hive.", dns.TypeA),
		query("hive.", dns.TypeAXFR),
	} {
		want := h.Reply(q.Copy(), true)
		orders := map[string]bool{}
		for range 30 {
			resp, _, err := c.Exchange(q.Copy(), s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Rcode != want.Rcode || resp.Authoritative != want.Authoritative || resp.Truncated != want.Truncated {
				t.Fatalf("%s: header %+v, want %+v", q.Question[0].String(), resp.MsgHdr, want.MsgHdr)
			}
			for _, sec := range [][2][]dns.RR{{resp.Answer, want.Answer}, {resp.Ns, want.Ns}, {resp.Extra, want.Extra}} {
				if got, want := rrStrings(sorted(sec[0])), rrStrings(sorted(sec[1])); !slices.Equal(got, want) {
					t.Fatalf("%s: got\n%q\nwant\n%q", q.Question[0].String(), got, want)
				}
			}
			orders[fmtRRs(resp.Answer)] = true
		}
		if len(want.Answer) > 2 && len(orders) < 2 {
			t.Errorf("%s: the %d answer records always came in one order", q.Question[0].String(), len(want.Answer))
		}
	}
}

func sorted(rrs []dns.RR) []dns.RR {
	out := slices.Clone(rrs)
	slices.SortFunc(out, func(a, b dns.RR) int {
		if a.String() < b.String() {
			return -1
		}
		return 1
	})
	return out
}

func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}

func fmtRRs(rrs []dns.RR) string {
	s := ""
	for _, rr := range rrs {
		s += rr.String() + "\n"
	}
	return s
}

// TestAnswerSpansCompressed checks the cache keeps no answer whose names
// are compressed: moving its records would break the pointers.
func TestAnswerSpansCompressed(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("web.service.hive.", dns.TypeA)
	for _, a := range []string{"10.0.0.1", "10.0.0.2"} {
		rr, _ := dns.NewRR("web.service.hive. 5 IN A " + a)
		m.Answer = append(m.Answer, rr)
	}
	m.Compress = true
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := answerSpans(wire, 1, 2); ok {
		t.Error("spans found in a compressed message")
	}
	m.Compress = false
	wire, _ = m.Pack()
	spans, ok := answerSpans(wire, 1, 2)
	if !ok || len(spans) != 3 || spans[2] != len(wire) {
		t.Errorf("uncompressed: spans %v %v for %d bytes", spans, ok, len(wire))
	}
}

// TestAnswerCacheBound fills a cache past its budget: it drops answers
// instead of growing, and forgets them in its name and SOA lists too.
func TestAnswerCacheBound(t *testing.T) {
	h := newHandler(t, testConfig(), fixture(t))
	c := newAnswerCache()
	q := query("nope.node.hive.", dns.TypeA)
	m := h.Reply(q, true)
	wire, _ := m.Pack()
	const n = 120000
	for i := range n {
		q.Question[0].Name = fmt.Sprintf("nope%d.node.hive.", i)
		p, _ := q.Pack()
		// The same answer bytes for every key: packing each is not what
		// is tested here.
		c.put(p, wire, m)
		if c.size > maxCachedBytes {
			t.Fatalf("%d bytes cached after %d answers", c.size, i+1)
		}
	}
	if len(c.entries) == 0 || len(c.entries) == n {
		t.Fatalf("%d answers cached", len(c.entries))
	}
	if len(c.withSOA) > len(c.entries) || len(c.byName) > len(c.entries) {
		t.Errorf("%d answers cached, %d listed as carrying the SOA, %d names listed", len(c.entries), len(c.withSOA), len(c.byName))
	}
}
