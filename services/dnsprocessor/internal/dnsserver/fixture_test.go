package dnsserver

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/zone"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// fixture is the cluster every table test asks about.
func fixture(t testing.TB) *hoststate.Snapshot {
	t.Helper()
	s := hoststate.New()
	hosts := []hoststate.Host{
		{
			Name:  "web1",
			Addrs: addrs("10.0.0.1", "2001:db8::1"),
			Meta:  map[string]string{"rack": "r1", "os": "linux"},
			Services: []hoststate.Service{
				{Name: "web", Port: 80, Tags: []string{"primary", "v2"}, Weight: 10, Health: hoststate.Passing},
				{Name: "db", Port: 5432, Health: hoststate.Critical},
			},
		},
		{
			Name:  "web2",
			Addrs: addrs("10.0.0.2"),
			Services: []hoststate.Service{
				{Name: "web", Port: 8080, Tags: []string{"v2", "not.a.label"}, Health: hoststate.Warning},
				{ID: "api-1", Name: "api", Port: 9000, Health: hoststate.Passing},
				{ID: "api-2", Name: "api", Port: 9001, Health: hoststate.Passing},
			},
		},
		{
			Name:     "down",
			Addrs:    addrs("10.0.0.9"),
			Services: []hoststate.Service{{Name: "web", Port: 80, Health: hoststate.Passing}},
		},
		{
			Name:     "bad_name",
			Addrs:    addrs("10.0.0.8"),
			Services: []hoststate.Service{{Name: "web", Port: 80, Health: hoststate.Passing}},
		},
	}
	for i := range hosts {
		h := &hosts[i]
		mustApply(t, s, hoststate.Update{Op: hoststate.Put, Host: h.Name, Record: h, Seq: 1, Time: 1, Revision: uint64(40 + i)})
	}
	mustApply(t, s, hoststate.Update{Op: hoststate.Failed, Host: "down", Time: 2, Revision: 42})
	return s.Snapshot()
}

func mustApply(t testing.TB, s *hoststate.State, u hoststate.Update) {
	t.Helper()
	if _, err := s.Apply(u); err != nil {
		t.Fatal(err)
	}
}

// big is a cluster with n instances of service "big", too many for 512
// bytes.
func big(t testing.TB, n int) *hoststate.Snapshot {
	t.Helper()
	s := hoststate.New()
	for i := range n {
		name := fmt.Sprintf("h%03d", i)
		mustApply(t, s, hoststate.Update{Op: hoststate.Put, Host: name, Seq: 1, Record: &hoststate.Host{
			Addrs:    addrs(fmt.Sprintf("10.1.%d.%d", i/256, i%256)),
			Services: []hoststate.Service{{Name: "big", Port: 80, Health: hoststate.Passing}},
		}})
	}
	return s.Snapshot()
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Zone.NameServers = []zone.NameServer{
		{Name: "ns1.hive.", Addrs: addrs("10.0.0.53")},
		{Name: "ns.example.net."},
	}
	cfg.Shuffle = func(int, func(i, j int)) {} // answers in zone order
	return cfg
}

func newHandler(t testing.TB, cfg Config, snap *hoststate.Snapshot) *Handler {
	t.Helper()
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if snap != nil {
		if err := h.Update(context.Background(), snap); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func zoneConfig(origin string) zone.Config {
	c := zone.DefaultConfig()
	c.Origin = origin
	return c
}
