package dnsnode

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// Bootstrap at R, then the watch applies later changes in order; answers
// come over real DNS; Status and Lookup say where they come from.
func TestBootstrapThenWatch(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1})
	putHost(t, c, hostRecord("web1", 1, "10.0.0.1"))
	putHost(t, c, hostRecord("web2", 1, "10.0.0.2"))
	gone := &hivemindv1.HostRecord{Node: "old", Seq: 3, Hlc: 3 << 16, Gone: true}
	putHost(t, c, gone)

	cp := &switchable{}
	cp.set(c.ControlPlane())
	n := startNode(t, "dns1", cp, nil, c.Secret)
	waitFor(t, 20*time.Second, "bootstrap", n.Ready)
	snap := n.State().Snapshot()
	if !served(snap, "web1", "10.0.0.1") || !served(snap, "web2", "10.0.0.2") || snap.Seq("old") != 3 {
		t.Fatalf("bootstrap: %v, old seq %d", snap.Hosts(), snap.Seq("old"))
	}

	// Later changes, in order: the last one for each host wins.
	for seq := uint64(2); seq <= 5; seq++ {
		putHost(t, c, hostRecord("web1", seq, "10.0.1."+string(rune('0'+seq))))
	}
	putHost(t, c, &hivemindv1.HostRecord{Node: "web2", Seq: 2, Hlc: 2 << 16, Gone: true})
	last := putHost(t, c, hostRecord("web3", 1, "10.0.0.3"))
	waitState(t, n.Node, "the watched changes", func(s *hoststate.Snapshot) bool {
		_, web2 := s.Host("web2")
		return served(s, "web1", "10.0.1.5") && !web2 && served(s, "web3", "10.0.0.3")
	})
	if got := n.State().Revision(); got < uint64(last) {
		t.Errorf("revision %d, want at least %d", got, last)
	}

	r := query(t, n.Node, "WEB1.node.hive.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative || strings.Join(answerA(r), ",") != "10.0.1.5" {
		t.Errorf("dig web1: %v", r)
	}
	if r := query(t, n.Node, "web2.node.hive.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("dig web2 (gone): rcode %s", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, n.Node, "_web._tcp.service.hive.", dns.TypeSRV); len(r.Answer) != 2 || len(r.Extra) != 2 {
		t.Errorf("dig SRV: %v", r)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lk, err := n.Client.Lookup(ctx, &hivemindv1.LookupRequest{Name: "web.service.hive", Type: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if lk.GetRcode() != "NOERROR" || len(lk.GetAnswer()) != 2 || lk.GetHostSeqs()["web1"] != 5 || lk.GetHostSeqs()["web3"] != 1 || lk.GetRevision() == 0 {
		t.Errorf("Lookup: %v", lk)
	}
	st, err := n.Client.Status(ctx, &hivemindv1.DNSProcessorStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.GetReady() || st.GetBootstrappedFrom() != "controlplane" || st.GetHosts() != 2 || st.GetServices() != 1 || st.GetZone() != "hive." || st.GetLagRevisions() < 0 {
		t.Errorf("Status: %v", st)
	}
}

// The fast path and the durable path converge by seq: whichever brings the
// newer record wins, stale ones from either are dropped; a bad record in a
// stream is refused by name while the rest of the stream applies.
func TestFastAndDurablePathsConverge(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1})
	cp := &switchable{}
	cp.set(c.ControlPlane())
	n := startNode(t, "dns1", cp, nil, c.Secret)
	waitFor(t, 20*time.Second, "bootstrap", n.Ready)

	if _, err := n.pushAs(t, "web1", hostRecord("web1", 5, "10.0.0.5")); err != nil {
		t.Fatal(err)
	}
	if !served(n.State().Snapshot(), "web1", "10.0.0.5") {
		t.Fatal("pushed record not served")
	}
	// The durable path delivers an older record, then the same one.
	putHost(t, c, hostRecord("web1", 4, "10.0.0.4"))
	rev := putHost(t, c, hostRecord("web1", 5, "10.0.0.5"))
	waitFor(t, 10*time.Second, "the durable writes to be read", func() bool { return n.State().Revision() >= uint64(rev) })
	if !served(n.State().Snapshot(), "web1", "10.0.0.5") {
		t.Fatalf("stale durable record applied: %v", n.State().Snapshot().Hosts())
	}
	// A newer durable record wins over the fast path's; a stale push after
	// it is dropped.
	putHost(t, c, hostRecord("web1", 6, "10.0.0.6"))
	waitState(t, n.Node, "seq 6 from the durable path", func(s *hoststate.Snapshot) bool { return served(s, "web1", "10.0.0.6") })
	// A host pushes only its own record, so the stale, bad and good
	// records of one stream are all web1's.
	bad := hostRecord("web1", 7, "not-an-ip")
	_, err := n.pushAs(t, "web1", hostRecord("web1", 5, "10.0.0.5"), bad, hostRecord("web1", 8, "10.0.0.8"))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "addresses[0]") || !strings.Contains(err.Error(), "record 1") {
		t.Errorf("bad record: %v, want INVALID_ARGUMENT naming record 1's addresses[0]", err)
	}
	snap := n.State().Snapshot()
	if !served(snap, "web1", "10.0.0.8") || snap.Seq("web1") != 8 {
		t.Errorf("after the stream: %v, web1 seq %d", snap.Hosts(), snap.Seq("web1"))
	}
	if r := query(t, n.Node, "web1.node.hive.", dns.TypeA); strings.Join(answerA(r), ",") != "10.0.0.8" {
		t.Errorf("dig web1: %v", r)
	}
}

// A host whose member fails stops being answered for; when it comes back
// its records are served again. The host is a real process killed with
// SIGKILL: gossip notices, the control-plane leader commits member.failed.
// The host agent publishes its record itself, both ways.
func TestMemberFailedAndAlive(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1})
	c.Add("web1", "host")
	c.WaitHealthy("web1", 30*time.Second)
	cp := &switchable{}
	cp.set(c.ControlPlane())
	n := startNode(t, "dns1", cp, nil, c.Secret)
	waitFor(t, 20*time.Second, "bootstrap", n.Ready)
	// The agent publishes its own record (both ways).
	up := func(s *hoststate.Snapshot) bool {
		h, ok := s.Host("web1")
		return ok && !h.Failed && len(h.Addrs) > 0
	}
	waitState(t, n.Node, "web1's record served", up)
	var addr string
	for _, a := range n.State().Snapshot().Hosts()[0].Addrs {
		if a.Is4() && addr == "" {
			addr = a.String()
		}
	}

	c.Kill("web1")
	waitState(t, n.Node, "web1 failed", func(s *hoststate.Snapshot) bool {
		h, ok := s.Host("web1")
		return ok && h.Failed
	})
	waitFor(t, 5*time.Second, "NXDOMAIN for the failed host", func() bool {
		return query(t, n.Node, "web1.node.hive.", dns.TypeA).Rcode == dns.RcodeNameError
	})

	c.Restart("web1")
	waitState(t, n.Node, "web1 alive again", up)
	waitFor(t, 5*time.Second, "web1 answered again", func() bool {
		return strings.Contains(strings.Join(answerA(query(t, n.Node, "web1.node.hive.", dns.TypeA)), ","), addr)
	})
}

// With the control plane down, a new processor is not ready and answers
// SERVFAIL until it bootstraps from a peer; it then answers what the peer
// held, and switches to the control plane's watch once that answers.
func TestPeerBootstrapWhileControlPlaneDown(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1})
	putHost(t, c, hostRecord("web1", 1, "10.0.0.1"))
	real := c.ControlPlane()

	cp2 := &switchable{}
	cp2.set(down{})
	var peers []Peer
	peersReady := make(chan struct{})
	n2 := startNode(t, "dns2", cp2, func() []Peer {
		select {
		case <-peersReady:
			return peers
		default:
			return nil
		}
	}, c.Secret)

	// Not bootstrapped: not ready, SERVFAIL, no snapshot to hand out.
	if r := query(t, n2.Node, "web1.node.hive.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("before bootstrap: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n2.Client.HostSnapshot(ctx, &hivemindv1.HostSnapshotRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("HostSnapshot before bootstrap: %v, want UNAVAILABLE", err)
	}
	if st, err := n2.Client.Status(ctx, &hivemindv1.DNSProcessorStatusRequest{}); err != nil || st.GetReady() {
		t.Errorf("Status before bootstrap: %v, %v", st, err)
	}

	cp1 := &switchable{}
	cp1.set(real)
	n1 := startNode(t, "dns1", cp1, nil, c.Secret)
	waitFor(t, 20*time.Second, "dns1 bootstrap", n1.Ready)
	if _, err := n1.pushAs(t, "fast", hostRecord("fast", 2, "10.0.0.9")); err != nil {
		t.Fatal(err)
	}
	peers = []Peer{{Name: "dns1", Addr: n1.GRPC}}
	close(peersReady)

	waitFor(t, 20*time.Second, "dns2 bootstrapped from dns1", n2.Ready)
	if from := n2.bootstrappedFrom(); from != "peer dns1" {
		t.Errorf("bootstrapped from %q", from)
	}
	if r := query(t, n2.Node, "fast.node.hive.", dns.TypeA); strings.Join(answerA(r), ",") != "10.0.0.9" {
		t.Errorf("dig fast on dns2: %v", r)
	}
	if !served(n2.State().Snapshot(), "web1", "10.0.0.1") {
		t.Errorf("dns2 holds %v", n2.State().Snapshot().Hosts())
	}

	// The control plane answers again: dns2 bootstraps from it and follows
	// its watch, keeping the fast-path host it has no durable record of.
	cp2.set(real)
	waitFor(t, 20*time.Second, "dns2 on the control plane", func() bool { return n2.bootstrappedFrom() == "controlplane" })
	putHost(t, c, hostRecord("web1", 2, "10.0.0.2"))
	waitState(t, n2.Node, "the watched change on dns2", func(s *hoststate.Snapshot) bool {
		return served(s, "web1", "10.0.0.2") && served(s, "fast", "10.0.0.9")
	})
}
