package dnsserver

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func withEDNS(m *dns.Msg, size uint16, do bool, version uint8) *dns.Msg {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(size)
	o.SetVersion(version)
	if do {
		o.SetDo()
	}
	m.Extra = append(m.Extra, o)
	return m
}

// TestMessage covers what is about the message rather than the name asked:
// malformed queries, opcodes, EDNS0.
func TestMessage(t *testing.T) {
	tests := []struct {
		name     string
		req      func() *dns.Msg
		rcode    int
		question int    // questions echoed
		opt      uint16 // UDP size of the answered OPT, 0 for none
		do       bool
		answers  int
	}{
		{name: "no question", req: func() *dns.Msg { m := query("hive.", dns.TypeSOA); m.Question = nil; return m },
			rcode: dns.RcodeFormatError},
		{name: "two questions", req: func() *dns.Msg {
			m := query("hive.", dns.TypeSOA)
			m.Question = append(m.Question, m.Question[0])
			return m
		}, rcode: dns.RcodeFormatError},
		{name: "notify", req: func() *dns.Msg { m := query("hive.", dns.TypeSOA); m.Opcode = dns.OpcodeNotify; return m },
			rcode: dns.RcodeNotImplemented},
		{name: "update", req: func() *dns.Msg { m := query("hive.", dns.TypeSOA); m.Opcode = dns.OpcodeUpdate; return m },
			rcode: dns.RcodeNotImplemented},
		{name: "status without question", req: func() *dns.Msg { m := new(dns.Msg); m.Opcode = dns.OpcodeStatus; return m },
			rcode: dns.RcodeNotImplemented},
		{name: "chaos class", req: func() *dns.Msg {
			m := query("version.bind.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}, rcode: dns.RcodeRefused, question: 1},
		{name: "class ANY", req: func() *dns.Msg {
			m := query("web1.node.hive.", dns.TypeA)
			m.Question[0].Qclass = dns.ClassANY
			return m
		}, rcode: dns.RcodeSuccess, question: 1, answers: 1},
		{name: "edns echoed with our size", req: func() *dns.Msg { return withEDNS(query("hive.", dns.TypeSOA), 4096, false, 0) },
			rcode: dns.RcodeSuccess, question: 1, opt: DefaultUDPSize, answers: 1},
		{name: "edns DO copied", req: func() *dns.Msg { return withEDNS(query("hive.", dns.TypeSOA), 1232, true, 0) },
			rcode: dns.RcodeSuccess, question: 1, opt: DefaultUDPSize, do: true, answers: 1},
		{name: "edns on a negative answer", req: func() *dns.Msg { return withEDNS(query("nope.hive.", dns.TypeA), 1232, false, 0) },
			rcode: dns.RcodeNameError, question: 1, opt: DefaultUDPSize},
		{name: "edns on refused", req: func() *dns.Msg { return withEDNS(query("example.com.", dns.TypeA), 1232, false, 0) },
			rcode: dns.RcodeRefused, question: 1, opt: DefaultUDPSize},
		{name: "edns version 1", req: func() *dns.Msg { return withEDNS(query("hive.", dns.TypeSOA), 1232, false, 1) },
			rcode: dns.RcodeBadVers, opt: DefaultUDPSize},
		{name: "two OPT records", req: func() *dns.Msg {
			return withEDNS(withEDNS(query("hive.", dns.TypeSOA), 1232, false, 0), 1232, false, 0)
		}, rcode: dns.RcodeFormatError},
		{name: "no edns, no OPT", req: func() *dns.Msg { return query("hive.", dns.TypeSOA) },
			rcode: dns.RcodeSuccess, question: 1, answers: 1},
	}
	h := newHandler(t, testConfig(), fixture(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req()
			resp := roundTrip(t, h, req, true)
			if resp.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
			}
			if !resp.Response || resp.Id != req.Id || resp.Opcode != req.Opcode {
				t.Errorf("header %+v", resp.MsgHdr)
			}
			if len(resp.Question) != tt.question {
				t.Errorf("%d questions echoed, want %d", len(resp.Question), tt.question)
			}
			if len(resp.Answer) != tt.answers {
				t.Errorf("%d answers, want %d", len(resp.Answer), tt.answers)
			}
			opt := resp.IsEdns0()
			switch {
			case tt.opt == 0 && opt != nil:
				t.Errorf("OPT %v answered to a query without one", opt)
			case tt.opt != 0 && opt == nil:
				t.Error("no OPT answered")
			case opt != nil:
				if opt.UDPSize() != tt.opt || opt.Do() != tt.do || opt.Version() != 0 {
					t.Errorf("OPT size %d do %v version %d, want %d %v 0", opt.UDPSize(), opt.Do(), opt.Version(), tt.opt, tt.do)
				}
			}
		})
	}
}

func TestResponsesAreNotAnswered(t *testing.T) {
	h := newHandler(t, testConfig(), fixture(t))
	m := query("hive.", dns.TypeSOA)
	m.Response = true
	if resp := roundTrip(t, h, m, true); resp != nil {
		t.Errorf("answered a response: %v", resp)
	}
}

func TestServfailUntilFirstSnapshot(t *testing.T) {
	h := newHandler(t, testConfig(), nil)
	resp := roundTrip(t, h, query("web1.node.hive.", dns.TypeA), true)
	if resp.Rcode != dns.RcodeServerFailure || resp.Authoritative {
		t.Errorf("before bootstrap: rcode %s AA %v, want SERVFAIL without AA", dns.RcodeToString[resp.Rcode], resp.Authoritative)
	}
}

func TestConfiguredZoneAndTTLs(t *testing.T) {
	cfg := testConfig()
	cfg.Zone.Origin = "Cluster.Example."
	cfg.Zone.NameServers = nil
	cfg.Zone.TTL.Node = 60
	cfg.Zone.TTL.Negative = 30
	h := newHandler(t, cfg, fixture(t))

	resp := roundTrip(t, h, query("web1.node.cluster.example.", dns.TypeA), false)
	section(t, "answer", resp.Answer, []string{"web1.node.cluster.example. 60 IN A 10.0.0.1"})
	resp = roundTrip(t, h, query("web1.node.hive.", dns.TypeA), false)
	if resp.Rcode != dns.RcodeRefused {
		t.Errorf("old zone: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}
	resp = roundTrip(t, h, query("nope.cluster.example.", dns.TypeA), false)
	section(t, "authority", resp.Ns, []string{"cluster.example. 30 IN SOA ns.cluster.example. hostmaster.cluster.example. 43 3600 600 86400 30"})
	resp = roundTrip(t, h, query("cluster.example.", dns.TypeNS), false)
	section(t, "answer", resp.Answer, []string{"cluster.example. 3600 IN NS ns.cluster.example."})
	section(t, "additional", resp.Extra, nil)

	if _, err := NewHandler(Config{Zone: zoneConfig("bad..name.")}); err == nil {
		t.Error("a bad origin was accepted")
	}
}

// TestTruncation checks the size limits on UDP: 512 without EDNS, the
// client's size within [512, UDPSize] with it, everything over TCP.
func TestTruncation(t *testing.T) {
	snap := big(t, 200)
	tests := []struct {
		name    string
		udpSize uint16 // handler config
		client  uint16 // 0: no EDNS
		udp     bool
		limit   int
		tc      bool
	}{
		{name: "udp, no edns", client: 0, udp: true, limit: 512, tc: true},
		{name: "udp, client 4096, ours 1232", client: 4096, udp: true, limit: 1232, tc: true},
		{name: "udp, client 700", client: 700, udp: true, limit: 700, tc: true},
		{name: "udp, client below 512", client: 100, udp: true, limit: 512, tc: true},
		{name: "udp, ours raised to 4096, client 2000", udpSize: 4096, client: 2000, udp: true, limit: 2000, tc: true},
		{name: "udp, ours raised, client larger than the answer", udpSize: 65000, client: 65000, udp: true, limit: 65000},
		{name: "tcp", client: 0, limit: dns.MaxMsgSize},
		{name: "tcp with edns", client: 1232, limit: dns.MaxMsgSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.UDPSize = tt.udpSize
			h := newHandler(t, cfg, snap)
			req := query("big.service.hive.", dns.TypeA)
			if tt.client != 0 {
				withEDNS(req, tt.client, false, 0)
			}
			reply := h.Reply(req, tt.udp)
			wire, err := reply.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if len(wire) > tt.limit {
				t.Errorf("%d bytes, limit %d", len(wire), tt.limit)
			}
			if reply.Truncated != tt.tc {
				t.Errorf("TC %v, want %v", reply.Truncated, tt.tc)
			}
			if !tt.tc && len(reply.Answer) != 200 {
				t.Errorf("%d answers, want all 200", len(reply.Answer))
			}
			if tt.tc && len(reply.Answer) == 0 {
				t.Error("truncated to nothing")
			}
			if (tt.client != 0) != (reply.IsEdns0() != nil) {
				t.Errorf("OPT %v for client size %d", reply.IsEdns0(), tt.client)
			}
		})
	}
}

// TestShuffle checks that instance order varies and that an injected seed
// makes it repeatable.
func TestShuffle(t *testing.T) {
	snap := big(t, 20)
	order := func(h *Handler) []string {
		var out []string
		for _, rr := range h.Reply(query("big.service.hive.", dns.TypeA), false).Answer {
			out = append(out, rr.(*dns.A).A.String())
		}
		return out
	}
	seeded := func() *Handler {
		cfg := testConfig()
		var mu sync.Mutex
		rng := rand.New(rand.NewPCG(7, 7))
		cfg.Shuffle = func(n int, swap func(i, j int)) {
			mu.Lock()
			defer mu.Unlock()
			rng.Shuffle(n, swap)
		}
		return newHandler(t, cfg, snap)
	}
	a, b := seeded(), seeded()
	first := order(a)
	if !slices.Equal(first, order(b)) {
		t.Error("same seed, different order")
	}
	differs := false
	for range 10 {
		if !slices.Equal(order(a), first) {
			differs = true
		}
	}
	if !differs {
		t.Error("order never changes")
	}
	cfg := testConfig()
	cfg.Shuffle = nil
	def := newHandler(t, cfg, snap)
	differs = false
	for range 10 {
		if !slices.Equal(order(def), order(def)) {
			differs = true
		}
	}
	if !differs {
		t.Error("default shuffle never changes the order")
	}
}
