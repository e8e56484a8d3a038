package zone

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// fleet is a state of n hosts shaped like bench's dns.qps zone: one
// address, a rack metadata key, one passing instance of one of n/4
// services, the first instance of each tagged primary.
func fleet(tb testing.TB, n int) *hoststate.State {
	tb.Helper()
	s := hoststate.New()
	b := hoststate.Bootstrap{Revision: 1}
	for i := range n {
		b.Hosts = append(b.Hosts, fleetHost(i, n, 1))
	}
	s.Restore(b)
	return s
}

func fleetHost(i, n int, seq uint64) hoststate.Host {
	services := max(1, n/4)
	var tags []string
	if i < services {
		tags = []string{"primary"}
	}
	return hoststate.Host{
		Name:  fmt.Sprintf("h%04d", i),
		Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(seq), byte(i >> 8), byte(i)})},
		Meta:  map[string]string{"rack": fmt.Sprintf("r%02d", i%20)},
		Services: []hoststate.Service{{
			Name: fmt.Sprintf("svc%03d", i%services), Port: 8080, Tags: tags, Health: hoststate.Passing,
		}},
		Seq: seq, Time: hlc.Timestamp(seq),
	}
}

// BenchmarkChange is one host's new address applied to the state and the
// zone, at 100 and 10,000 hosts: the cost per change must not grow with
// the fleet.
func BenchmarkChange(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprint(n, "hosts"), func(b *testing.B) {
			s := fleet(b, n)
			x, err := NewIndex(DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			last := s.Snapshot()
			x.Reset(last)
			seq := uint64(1)
			i := 0
			for b.Loop() {
				i = (i + 7919) % n
				seq++
				h := fleetHost(i, n, seq)
				if _, err := s.Apply(hoststate.Update{Op: hoststate.Put, Host: h.Name, Seq: seq, Time: h.Time, Record: &h, Revision: seq}); err != nil {
					b.Fatal(err)
				}
				snap := s.Snapshot()
				hosts, ok := snap.Changed(last)
				if !ok {
					b.Fatal("change not known")
				}
				x.Update(snap, hosts)
				last = snap
			}
		})
	}
}

// BenchmarkBootstrap builds the zone of 10,000 hosts from scratch, as a
// fresh processor does once, and reports the live heap per host of the
// state and the zone together.
func BenchmarkBootstrap(b *testing.B) {
	const n = 10000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := fleet(b, n)
	x, err := NewIndex(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		x.Reset(s.Snapshot())
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/host")
	runtime.KeepAlive(x)
	runtime.KeepAlive(s)
}
