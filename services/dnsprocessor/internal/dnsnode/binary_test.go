package dnsnode

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/pkg/clustertest"
)

// The hivemind-dns binary as make run and compose start it: it joins,
// bootstraps, says SERVING, and answers DNS on its --dns-addr.
func TestBinaryServesDNSOnceBootstrapped(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1})
	putHost(t, c, hostRecord("web1", 1, "10.0.0.1"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c.Add("dns1", "dns", "--dns-addr", addr, "--zone", "example.", "--ttl-node", "30")
	c.WaitHealthy("dns1", 30*time.Second)

	m := new(dns.Msg)
	m.SetQuestion("web1.node.example.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 || !strings.HasSuffix(r.Answer[0].String(), "10.0.0.1") {
		t.Errorf("dig web1.node.example: %v", r)
	}
}
