package zone

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// propConfig has a name server inside node.<zone> with glue, so a host of
// that name shares its name with the apex's records.
func propConfig() Config {
	return Config{Origin: "hive.", NameServers: []NameServer{
		{Name: "ns.hive.", Addrs: []netip.Addr{netip.MustParseAddr("10.9.9.9")}},
		{Name: "h1.node.hive.", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{Name: "ns.example.org."},
	}}
}

var (
	propHosts    = []string{"h0", "h1", "h2", "h3", "h4", "h5", "H6", "bad_host", "h8"}
	propServices = []string{"web", "db", "api", "Bad_svc"}
	propTags     = []string{"primary", "v1", "x_y"}
	propAddrs    = []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "fd00::2", "::ffff:10.0.0.4"}
	propTypes    = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT, dns.TypeSOA, dns.TypeNS, dns.TypeANY, dns.TypeMX}
)

// randomRecord is a host record drawn from small pools, so hosts share
// addresses, services and tags, and some names are not DNS labels.
func randomRecord(rng *rand.Rand) *hoststate.Host {
	h := &hoststate.Host{Meta: map[string]string{}}
	for range rng.IntN(3) {
		h.Addrs = append(h.Addrs, netip.MustParseAddr(propAddrs[rng.IntN(len(propAddrs))]))
	}
	for range rng.IntN(3) {
		h.Meta[fmt.Sprint("k", rng.IntN(3))] = strings.Repeat("v", rng.IntN(300))
	}
	for i := range rng.IntN(4) {
		s := hoststate.Service{
			ID: fmt.Sprint("i", i), Name: propServices[rng.IntN(len(propServices))],
			Port: uint16(8000 + rng.IntN(3)), Weight: uint16(rng.IntN(3)), Health: hoststate.Health(rng.IntN(3)),
		}
		for range rng.IntN(3) {
			s.Tags = append(s.Tags, propTags[rng.IntN(len(propTags))])
		}
		h.Services = append(h.Services, s)
	}
	return h
}

// TestIndexMatchesFullBuild applies random sequences of host changes (put,
// delete, fail, recover, a whole-state restore now and then) and, after
// each, holds the incrementally kept zone to the one built from scratch by
// the old builder, for every name of either and every type. It also checks
// that every name whose answer changed was reported (what the answer cache
// drops), and that negative answers moved only with the SOA flag.
func TestIndexMatchesFullBuild(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			s := hoststate.New()
			x, err := NewIndex(propConfig())
			if err != nil {
				t.Fatal(err)
			}
			last := s.Snapshot()
			z := x.Reset(last)
			seqs := map[string]uint64{}
			clock := hlc.Timestamp(0)
			for step := range 50 {
				// One to three changes between zones, as a processor that
				// skipped superseded snapshots sees them.
				for range 1 + rng.IntN(3) {
					applyRandom(t, rng, s, seqs, &clock, uint64(step))
				}
				snap := s.Snapshot()
				prev := z
				var changed []string
				if hosts, ok := snap.Changed(last); ok {
					z, changed = x.Update(snap, hosts)
				} else {
					z, changed = x.Reset(snap), nil
					prev = nil
				}
				last = snap
				ref, err := refBuild(propConfig(), snap)
				if err != nil {
					t.Fatal(err)
				}
				compareZones(t, step, z, ref, prev, changed)
				if t.Failed() {
					return
				}
			}
		})
	}
}

func applyRandom(t *testing.T, rng *rand.Rand, s *hoststate.State, seqs map[string]uint64, clock *hlc.Timestamp, rev uint64) {
	t.Helper()
	host := propHosts[rng.IntN(len(propHosts))]
	name := strings.ToLower(host)
	*clock += 10
	var u hoststate.Update
	switch r := rng.IntN(20); {
	case r < 11:
		seqs[name]++
		u = hoststate.Update{Op: hoststate.Put, Host: host, Seq: seqs[name], Time: *clock, Record: randomRecord(rng), Revision: rev}
	case r < 13:
		seqs[name]++
		u = hoststate.Update{Op: hoststate.Delete, Host: host, Seq: seqs[name], Revision: rev}
	case r < 14:
		u = hoststate.Update{Op: hoststate.Delete, Host: host, Revision: rev}
	case r < 16:
		u = hoststate.Update{Op: hoststate.Failed, Host: host, Time: *clock, Revision: rev}
	case r < 18:
		u = hoststate.Update{Op: hoststate.Alive, Host: host, Revision: rev}
	case r < 19:
		// A stale put: dropped by the state, nothing changes.
		u = hoststate.Update{Op: hoststate.Put, Host: host, Seq: seqs[name], Record: randomRecord(rng), Revision: rev}
	default:
		b := s.Snapshot().Bootstrap()
		b.Revision = rev
		b.Reset = rng.IntN(3) == 0 // a new epoch: the zone is built again
		if rng.IntN(2) == 0 && len(b.Hosts) > 0 {
			b.Hosts = b.Hosts[1:] // a host the view does not mention is kept
		}
		s.Restore(b)
		return
	}
	if _, err := s.Apply(u); err != nil {
		t.Fatal(err)
	}
}

// sameResult compares two Results record by record, TTLs included and
// in order.
func sameResult(a, b Result) bool {
	same := func(x, y []dns.RR) bool {
		return slices.EqualFunc(x, y, func(p, q dns.RR) bool { return p.Header().Ttl == q.Header().Ttl && dns.IsDuplicate(p, q) })
	}
	return a.Rcode == b.Rcode && a.Authoritative == b.Authoritative && same(a.Answer, b.Answer) && same(a.Ns, b.Ns) && same(a.Extra, b.Extra)
}

// answer is a Result in a form to read.
func answer(r Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s aa=%v\n", dns.RcodeToString[r.Rcode], r.Authoritative)
	for i, sec := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range sec {
			fmt.Fprintf(&b, "%d %s\n", i, rr)
		}
	}
	return b.String()
}

func compareZones(t *testing.T, step int, z *Zone, ref *refZone, prev *Zone, changed []string) {
	t.Helper()
	names := map[string]bool{"nope.node.hive.": true, "x.h1.node.hive.": true, "example.org.": true}
	for n := range ref.names {
		names[n] = true
	}
	for n := range z.names.All() {
		names[n] = true
	}
	if prev != nil {
		for n := range prev.names.All() {
			names[n] = true
		}
	}
	if z.Len() != len(ref.names) {
		t.Errorf("step %d: %d names, full build has %d", step, z.Len(), len(ref.names))
	}
	soaMoved := prev != nil && prev.Revision() != z.Revision()
	for _, n := range slices.Sorted(maps.Keys(names)) {
		for _, qt := range propTypes {
			got, want := z.Lookup(n, qt), ref.Lookup(n, qt)
			if !sameResult(got, want) {
				t.Errorf("step %d: %s %s:\n%s\nfull build:\n%s", step, n, dns.TypeToString[qt], answer(got), answer(want))
				continue
			}
			if prev == nil {
				continue
			}
			before := prev.Lookup(n, qt)
			if sameResult(before, got) || slices.Contains(changed, n) {
				continue
			}
			carriesSOA := len(before.Ns) > 0 || qt == dns.TypeSOA || qt == dns.TypeANY && n == z.Origin()
			if !(soaMoved && carriesSOA) {
				t.Errorf("step %d: %s %s changed but was not reported:\nbefore:\n%s\nnow:\n%s", step, n, dns.TypeToString[qt], answer(before), answer(got))
			}
		}
	}
}
