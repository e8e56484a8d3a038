package dnsserver

import (
	"context"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// TestQueriesDuringUpdates answers from many goroutines while snapshots
// are swapped in; run with -race, it checks that answers never share
// memory with the zone or with each other.
func TestQueriesDuringUpdates(t *testing.T) {
	h := newHandler(t, testConfig(), fixture(t))
	s := hoststate.New()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, q := range []*dns.Msg{query("_web._tcp.service.hive.", dns.TypeSRV), query("a.node.hive.", dns.TypeA), query("nope.hive.", dns.TypeA)} {
					if _, err := h.Reply(q, true).Pack(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	for seq := uint64(1); seq <= 200; seq++ {
		mustApply(t, s, hoststate.Update{Op: hoststate.Put, Host: "a", Seq: seq, Revision: seq, Record: &hoststate.Host{
			Addrs:    addrs("10.0.0.1"),
			Services: []hoststate.Service{{Name: "web", Port: uint16(seq), Health: hoststate.Passing}},
		}})
		if err := h.Update(context.Background(), s.Snapshot()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if got := h.Zone().Revision(); got != 200 {
		t.Errorf("serving revision %d, want 200", got)
	}
}
