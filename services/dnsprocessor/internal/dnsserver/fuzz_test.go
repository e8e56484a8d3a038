package dnsserver

import (
	"bytes"
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandler feeds arbitrary packets to the handler the way the server
// does: whatever parses is answered without a panic, with a reply that
// packs and fits its transport; what is malformed or does not parse gets
// FORMERR.
func FuzzHandler(f *testing.F) {
	seeds := []*dns.Msg{
		query("web1.node.hive.", dns.TypeA),
		query("_web._tcp.service.hive.", dns.TypeSRV),
		withEDNS(query("big.service.hive.", dns.TypeA), 4096, true, 0),
		withEDNS(query("hive.", dns.TypeSOA), 512, false, 3),
		query("example.com.", dns.TypeANY),
	}
	for _, m := range seeds {
		wire, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire, true)
		f.Add(wire, false)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0}, true)

	snap := fixture(f)
	h := newHandler(f, testConfig(), snap)
	f.Fuzz(func(t *testing.T, packet []byte, udp bool) {
		req := new(dns.Msg)
		var reply *dns.Msg
		if err := req.Unpack(packet); err != nil {
			// What the UDP loop does with a packet that does not parse.
			if len(packet) < 12 || req.Response {
				return
			}
			id := req.Id
			reply = formErr(req)
			if _, err := reply.Pack(); err != nil || reply.Rcode != dns.RcodeFormatError || reply.Id != id {
				t.Fatalf("FORMERR reply %v does not pack (%v)", reply, err)
			}
			return
		}
		reply = h.Reply(req, udp)
		if req.Response {
			if reply != nil {
				t.Fatal("a response was answered")
			}
			return
		}
		if reply == nil {
			t.Fatal("no reply")
		}
		wire, err := reply.Pack()
		if err != nil {
			t.Fatalf("reply does not pack: %v\n%v", err, reply)
		}
		if reply.Id != req.Id || !reply.Response {
			t.Fatalf("header %+v for id %d", reply.MsgHdr, req.Id)
		}
		limit := dns.MaxMsgSize
		if udp {
			limit = DefaultUDPSize
			if req.IsEdns0() == nil {
				limit = dns.MinMsgSize
			}
		}
		if len(wire) > limit {
			t.Fatalf("%d-byte reply over a %d-byte limit", len(wire), limit)
		}
		if malformed(req) && reply.Rcode != dns.RcodeFormatError {
			t.Fatalf("malformed query answered %s", dns.RcodeToString[reply.Rcode])
		}
		// The UDP loop's cache gives back the same bytes but for the ID
		// and the answer order, and the handler here does not reorder.
		if !udp {
			return
		}
		c := newAnswerCache()
		c.put(packet, wire, reply)
		again := append([]byte{0xAB, 0xCD}, packet[2:]...)
		got := c.get(again, make([]byte, len(wire)), h.Shuffle)
		if got == nil {
			return // not kept (compressed or truncated)
		}
		want := append([]byte{0xAB, 0xCD}, wire[2:]...)
		if !bytes.Equal(got, want) {
			t.Fatalf("cached answer\n%x\nwant\n%x", got, want)
		}
	})
}

// malformed is what must get FORMERR whatever else is wrong with it.
func malformed(m *dns.Msg) bool {
	opts := 0
	for _, rr := range m.Extra {
		if _, ok := rr.(*dns.OPT); ok {
			opts++
		}
	}
	if opts > 1 {
		return true
	}
	if o := m.IsEdns0(); o != nil && o.Version() != 0 {
		return false // BADVERS comes first
	}
	return m.Opcode == dns.OpcodeQuery && len(m.Question) != 1
}
