package dnsserver

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func startServer(t *testing.T, h Replier) *Server {
	t.Helper()
	s := NewServer("127.0.0.1:0", h)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// TestServerSockets asks over real UDP and TCP sockets with a real client:
// a large answer comes back truncated over UDP, and whole over TCP, which
// is what a resolver does on TC.
func TestServerSockets(t *testing.T) {
	s := startServer(t, newHandler(t, testConfig(), big(t, 200)))

	udp := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	resp, _, err := udp.Exchange(query("h001.node.hive.", dns.TypeA), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	section(t, "answer", resp.Answer, []string{"h001.node.hive. 10 IN A 10.1.0.1"})

	resp, _, err = udp.Exchange(withEDNS(query("big.service.hive.", dns.TypeA), 1232, false, 0), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Truncated || len(resp.Answer) == 0 || len(resp.Answer) >= 200 {
		t.Fatalf("udp: TC %v with %d answers, want TC and a partial answer", resp.Truncated, len(resp.Answer))
	}

	tcp := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	resp, _, err = tcp.Exchange(withEDNS(query("big.service.hive.", dns.TypeA), 1232, false, 0), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated || len(resp.Answer) != 200 || !resp.Authoritative {
		t.Fatalf("tcp: TC %v AA %v with %d answers, want all 200", resp.Truncated, resp.Authoritative, len(resp.Answer))
	}
}

// TestServerMalformed sends packets a dns.Client cannot: one that does not
// parse gets FORMERR, a response gets nothing.
func TestServerMalformed(t *testing.T) {
	s := startServer(t, newHandler(t, testConfig(), fixture(t)))
	conn, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// A header announcing one question, followed by a name cut short.
	bad := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, 'h', 'i'}
	resp := exchangeRaw(t, conn, bad)
	if resp == nil || resp.Id != 0x1234 || resp.Rcode != dns.RcodeFormatError {
		t.Fatalf("malformed query answered %v, want FORMERR", resp)
	}

	q := query("hive.", dns.TypeSOA)
	q.Response = true
	wire, _ := q.Pack()
	if resp := exchangeRaw(t, conn, wire); resp != nil {
		t.Fatalf("a response was answered: %v", resp)
	}
}

// exchangeRaw writes p and returns the reply, nil if none comes within a
// short wait (a silent server is the expected outcome for some packets).
func exchangeRaw(t *testing.T, conn net.Conn, p []byte) *dns.Msg {
	t.Helper()
	if _, err := conn.Write(p); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatalf("unparseable reply: %v", err)
	}
	return m
}

func TestServerUpdatesWhileServing(t *testing.T) {
	h := newHandler(t, testConfig(), nil)
	s := startServer(t, h)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(query("web1.node.hive.", dns.TypeA), s.Addr())
	if err != nil || resp.Rcode != dns.RcodeServerFailure {
		t.Fatalf("before the first snapshot: %v %v", resp, err)
	}
	if err := h.Update(context.Background(), fixture(t)); err != nil {
		t.Fatal(err)
	}
	resp, _, err = c.Exchange(query("web1.node.hive.", dns.TypeA), s.Addr())
	if err != nil || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Fatalf("after the first snapshot: %v %v", resp, err)
	}
}

// TestServerUDPSockets checks every UDP socket sharing the port answers:
// clients from many source ports land on different sockets.
func TestServerUDPSockets(t *testing.T) {
	s := startServer(t, newHandler(t, testConfig(), big(t, 3)))
	if len(s.udp) < 1 || len(s.udp) > udpSockets() {
		t.Fatalf("%d UDP sockets, want 1..%d", len(s.udp), udpSockets())
	}
	for i := range 8 * len(s.udp) {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		resp, _, err := c.Exchange(query("h001.node.hive.", dns.TypeA), s.Addr())
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		section(t, "answer", resp.Answer, []string{"h001.node.hive. 10 IN A 10.1.0.1"})
	}
}

// TestServerWildcardSource binds unspecified addresses, as containers do
// (":53"), and asks on an address other than the one the kernel would pick
// to answer from: the client's socket is connected, so an answer from any
// other address never reaches it.
func TestServerWildcardSource(t *testing.T) {
	h := newHandler(t, testConfig(), big(t, 3))
	for _, tt := range []struct{ network, bind, ask string }{
		{"udp4", "0.0.0.0:0", "127.0.0.2"},
		{"udp", "0.0.0.0:0", "127.0.0.2"}, // a dual-stack IPv6 socket
		{"udp", "[::]:0", "127.0.0.2"},
		{"udp6", "[::]:0", "::1"},
	} {
		t.Run(tt.network+" "+tt.bind+" "+tt.ask, func(t *testing.T) {
			pc, err := net.ListenPacket(tt.network, tt.bind)
			if err != nil {
				t.Skipf("no %s socket here: %v", tt.network, err)
			}
			l, err := newUDPLoop(pc, h)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- l.serve() }()
			defer func() {
				pc.Close()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
			conn, err := net.Dial("udp", net.JoinHostPort(tt.ask, port))
			if err != nil {
				t.Skipf("cannot reach %s here: %v", tt.ask, err)
			}
			defer conn.Close()
			wire, _ := query("h001.node.hive.", dns.TypeA).Pack()
			resp := exchangeRaw(t, conn, wire)
			if resp == nil {
				t.Fatal("no answer from the address asked")
			}
			section(t, "answer", resp.Answer, []string{"h001.node.hive. 10 IN A 10.1.0.1"})
		})
	}
}

// TestServerBatch sends bursts from one socket, so the server reads many
// packets per call: every query is answered with its own id, a malformed
// one with FORMERR, and responses and runts not at all. A burst stays well
// inside the socket buffers, so nothing is lost on loopback.
func TestServerBatch(t *testing.T) {
	s := startServer(t, newHandler(t, testConfig(), big(t, 3)))
	conn, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	for round := range 5 {
		want := map[uint16]int{} // id → rcode
		for i := range 40 {
			id := uint16(round*100 + i + 1)
			switch i % 5 {
			case 0, 1, 2:
				q := query(fmt.Sprintf("h%03d.node.hive.", i%3), dns.TypeA)
				q.Id = id
				wire, _ := q.Pack()
				conn.Write(wire)
				want[id] = dns.RcodeSuccess
			case 3:
				conn.Write([]byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, 'h', 'i'})
				want[id] = dns.RcodeFormatError
			case 4:
				q := query("hive.", dns.TypeSOA)
				q.Id, q.Response = id, true
				wire, _ := q.Pack()
				conn.Write(wire)
				conn.Write(wire[:11])
			}
		}
		got := map[uint16]int{}
		for len(got) < len(want) {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("round %d: %d of %d queries answered: %v", round, len(got), len(want), err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(buf[:n]); err != nil {
				t.Fatalf("unparseable reply: %v", err)
			}
			if _, dup := got[m.Id]; dup {
				t.Fatalf("id %d answered twice", m.Id)
			}
			got[m.Id] = m.Rcode
			if w, ok := want[m.Id]; !ok || w != m.Rcode {
				t.Fatalf("id %d answered %s, want %v (%v)", m.Id, dns.RcodeToString[m.Rcode], dns.RcodeToString[w], ok)
			}
			if m.Rcode == dns.RcodeSuccess && len(m.Answer) != 1 {
				t.Fatalf("id %d: %v", m.Id, m)
			}
		}
	}
	// Nothing more: the responses and runts were not answered.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("an extra %d-byte reply", n)
	}
}
