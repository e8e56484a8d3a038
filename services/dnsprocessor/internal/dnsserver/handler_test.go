package dnsserver

import (
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

const (
	negSOA = "hive. 5 IN SOA ns1.hive. hostmaster.hive. 43 3600 600 86400 5"
	web1A  = "web1.node.hive. 10 IN A 10.0.0.1"
	web1Q  = "web1.node.hive. 10 IN AAAA 2001:db8::1"
	web2A  = "web2.node.hive. 10 IN A 10.0.0.2"
)

// TestLookup asks the fixture cluster one question per row and checks the
// whole answer: rcode, AA, and every section.
func TestLookup(t *testing.T) {
	tests := []struct {
		qname  string
		qtype  uint16
		rcode  int
		aa     bool
		answer []string
		ns     []string
		extra  []string
	}{
		// Apex.
		{qname: "hive.", qtype: dns.TypeSOA, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"hive. 3600 IN SOA ns1.hive. hostmaster.hive. 43 3600 600 86400 5"}},
		{qname: "hive.", qtype: dns.TypeNS, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"hive. 3600 IN NS ns.example.net.", "hive. 3600 IN NS ns1.hive."},
			extra:  []string{"ns1.hive. 3600 IN A 10.0.0.53"}},
		{qname: "hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},
		{qname: "ns1.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"ns1.hive. 3600 IN A 10.0.0.53"}},
		{qname: "ns1.hive.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},

		// Nodes.
		{qname: "web1.node.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true, answer: []string{web1A}},
		{qname: "web1.node.hive.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess, aa: true, answer: []string{web1Q}},
		{qname: "web1.node.hive.", qtype: dns.TypeTXT, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{`web1.node.hive. 10 IN TXT "os=linux"`, `web1.node.hive. 10 IN TXT "rack=r1"`}},
		{qname: "web1.node.hive.", qtype: dns.TypeANY, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{web1A, `web1.node.hive. 10 IN TXT "os=linux"`, `web1.node.hive. 10 IN TXT "rack=r1"`, web1Q}},
		{qname: "web1.node.hive.", qtype: dns.TypeMX, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},
		{qname: "web2.node.hive.", qtype: dns.TypeTXT, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},
		{qname: "WeB1.NODE.Hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"WeB1.NODE.Hive. 10 IN A 10.0.0.1"}},
		{qname: "nope.node.hive.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}},
		{qname: "down.node.hive.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}},
		{qname: "bad_name.node.hive.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}},
		{qname: "x.web1.node.hive.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}},

		// Empty non-terminals exist (RFC 8020): NODATA, not NXDOMAIN.
		{qname: "node.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},
		{qname: "service.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},
		{qname: "_tcp.service.hive.", qtype: dns.TypeSRV, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},
		{qname: "Node.Hive.", qtype: dns.TypeANY, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},
		{qname: "nothing.hive.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}},

		// Services: passing and warning instances, never critical ones, never
		// a failed host's.
		{qname: "web.service.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"web.service.hive. 5 IN A 10.0.0.1", "web.service.hive. 5 IN A 10.0.0.2"}},
		{qname: "web.service.hive.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"web.service.hive. 5 IN AAAA 2001:db8::1"}},
		{qname: "primary.web.service.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"primary.web.service.hive. 5 IN A 10.0.0.1"}},
		{qname: "v2.web.service.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"v2.web.service.hive. 5 IN A 10.0.0.1", "v2.web.service.hive. 5 IN A 10.0.0.2"}},
		{qname: "v3.web.service.hive.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}},
		{qname: "api.service.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"api.service.hive. 5 IN A 10.0.0.2"}},
		{qname: "db.service.hive.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}},
		{qname: "web.service.hive.", qtype: dns.TypeTXT, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},

		// SRV, with the targets' addresses in the additional section.
		{qname: "_web._tcp.service.hive.", qtype: dns.TypeSRV, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{
				"_web._tcp.service.hive. 5 IN SRV 1 1 8080 web2.node.hive.",
				"_web._tcp.service.hive. 5 IN SRV 1 10 80 web1.node.hive.",
			},
			extra: []string{web2A, web1A, web1Q}},
		{qname: "_API._TCP.service.hive.", qtype: dns.TypeSRV, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{
				"_API._TCP.service.hive. 5 IN SRV 1 1 9000 web2.node.hive.",
				"_API._TCP.service.hive. 5 IN SRV 1 1 9001 web2.node.hive.",
			},
			extra: []string{web2A}},
		{qname: "web.service.hive.", qtype: dns.TypeSRV, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{
				"web.service.hive. 5 IN SRV 1 1 8080 web2.node.hive.",
				"web.service.hive. 5 IN SRV 1 10 80 web1.node.hive.",
			},
			extra: []string{web2A, web1A, web1Q}},
		{qname: "primary.web.service.hive.", qtype: dns.TypeSRV, rcode: dns.RcodeSuccess, aa: true,
			answer: []string{"primary.web.service.hive. 5 IN SRV 1 10 80 web1.node.hive."},
			extra:  []string{web1A, web1Q}},
		{qname: "_db._tcp.service.hive.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}},
		{qname: "_web._tcp.service.hive.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}},

		// Outside the zone.
		{qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{qname: "xhive.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{qname: ".", qtype: dns.TypeNS, rcode: dns.RcodeRefused},
		{qname: "hive.example.", qtype: dns.TypeA, rcode: dns.RcodeRefused},

		// Questions this server does not answer.
		{qname: "hive.", qtype: dns.TypeAXFR, rcode: dns.RcodeRefused},
		{qname: "hive.", qtype: dns.TypeIXFR, rcode: dns.RcodeRefused},
		{qname: "hive.", qtype: dns.TypeMAILB, rcode: dns.RcodeNotImplemented},
		{qname: "hive.", qtype: dns.TypeOPT, rcode: dns.RcodeFormatError},
	}
	h := newHandler(t, testConfig(), fixture(t))
	for _, tt := range tests {
		t.Run(tt.qname+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			req := new(dns.Msg)
			req.SetQuestion(tt.qname, tt.qtype)
			resp := roundTrip(t, h, req, false)
			if resp.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
			}
			if resp.Authoritative != tt.aa {
				t.Errorf("AA %v, want %v", resp.Authoritative, tt.aa)
			}
			if !resp.Response || resp.Truncated || resp.RecursionAvailable || resp.Id != req.Id || !resp.RecursionDesired {
				t.Errorf("header %+v", resp.MsgHdr)
			}
			if len(resp.Question) != 1 || resp.Question[0] != req.Question[0] {
				t.Errorf("question %v, want %v", resp.Question, req.Question)
			}
			section(t, "answer", resp.Answer, tt.answer)
			section(t, "authority", resp.Ns, tt.ns)
			section(t, "additional", resp.Extra, tt.extra)
		})
	}
}

// roundTrip packs req, answers it, and unpacks the reply, as a client
// would see it.
func roundTrip(t *testing.T, h *Handler, req *dns.Msg, udp bool) *dns.Msg {
	t.Helper()
	wire, err := req.Pack()
	if err != nil {
		t.Fatal(err)
	}
	in := new(dns.Msg)
	if err := in.Unpack(wire); err != nil {
		t.Fatal(err)
	}
	reply := h.Reply(in, udp)
	if reply == nil {
		return nil
	}
	out, err := reply.Pack()
	if err != nil {
		t.Fatalf("pack reply: %v", err)
	}
	resp := new(dns.Msg)
	if err := resp.Unpack(out); err != nil {
		t.Fatalf("unpack reply: %v", err)
	}
	return resp
}

func section(t *testing.T, name string, got []dns.RR, want []string) {
	t.Helper()
	var gs, ws []string
	for _, rr := range got {
		gs = append(gs, rr.String())
	}
	for _, s := range want {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("bad expectation %q: %v", s, err)
		}
		ws = append(ws, rr.String())
	}
	if !slices.Equal(gs, ws) {
		t.Errorf("%s section:\n got  %s\n want %s", name, strings.Join(gs, "\n      "), strings.Join(ws, "\n      "))
	}
}
