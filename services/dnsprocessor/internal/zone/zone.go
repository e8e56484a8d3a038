// Package zone turns the host state into an authoritative DNS zone and
// answers questions from it. A Zone is immutable: any number of queries
// read one at once. An Index makes them: it builds the first zone from a
// whole snapshot, then each next one from the hosts that changed, sharing
// the rest with the zone before (see index.go).
package zone

import (
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/cowmap"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// Zone is an immutable zone: the answers for one snapshot of the hosts.
type Zone struct {
	origin   string
	revision uint64
	snap     *hoststate.Snapshot
	names    cowmap.Map[*node] // every name that exists, empty non-terminals included
	negNs    []dns.RR          // the SOA of negative answers, shared by every one
	suffix   string            // "." + origin, what every name below it ends with
}

// node is one name of a zone: its records by type and the additional
// section of its SRV and NS sets, each ordered by type; no records for an
// empty non-terminal. Nodes are shared between zones and never changed.
type node struct {
	sets  []rrset
	extra []rrset
}

type rrset struct {
	t   uint16
	rrs []dns.RR
}

func find(sets []rrset, t uint16) []dns.RR {
	for _, s := range sets {
		if s.t == t {
			return s.rrs
		}
	}
	return nil
}

// Result is the answer to one question. Its records are shared by every
// query against the zone: copy them before changing or packing them (dns
// packing writes into record headers).
type Result struct {
	Rcode int
	// Authoritative is set for every name inside the zone.
	Authoritative bool
	Answer        []dns.RR
	Ns            []dns.RR
	Extra         []dns.RR
}

// Build builds the zone of snap under cfg from scratch. Failed hosts,
// critical instances, and names that cannot be DNS labels are left out.
func Build(cfg Config, snap *hoststate.Snapshot) (*Zone, error) {
	x, err := NewIndex(cfg)
	if err != nil {
		return nil, err
	}
	return x.Reset(snap), nil
}

// Origin is the zone's name, lower case and fully qualified.
func (z *Zone) Origin() string { return z.origin }

// Revision is the control-plane revision of the snapshot the zone was built
// from; the SOA serial is its low 32 bits.
func (z *Zone) Revision() uint64 { return z.revision }

// Snapshot is the host state the zone answers for, so a reader that needs
// both sees the two agree.
func (z *Zone) Snapshot() *hoststate.Snapshot { return z.snap }

// Len is the number of names in the zone, empty non-terminals included.
func (z *Zone) Len() int { return z.names.Len() }

// Lookup answers qname (any case) and qtype from the zone.
func (z *Zone) Lookup(qname string, qtype uint16) Result {
	name := dns.CanonicalName(qname)
	if !z.inside(name) {
		return Result{Rcode: dns.RcodeRefused}
	}
	n, ok := z.names.Get(name)
	if !ok {
		return Result{Rcode: dns.RcodeNameError, Authoritative: true, Ns: z.negNs}
	}
	var answer, extra []dns.RR
	if qtype == dns.TypeANY {
		for _, s := range n.sets {
			answer = append(answer, s.rrs...)
		}
		extra = z.additional(answer)
	} else {
		answer, extra = find(n.sets, qtype), find(n.extra, qtype)
	}
	if len(answer) == 0 {
		return Result{Rcode: dns.RcodeSuccess, Authoritative: true, Ns: z.negNs}
	}
	return Result{
		Rcode:         dns.RcodeSuccess,
		Authoritative: true,
		Answer:        slices.Clip(answer),
		Extra:         slices.Clip(extra),
	}
}

// inside reports whether name (canonical) is the origin or below it,
// without the label-by-label comparison of dns.IsSubDomain: it runs for
// every query.
func (z *Zone) inside(name string) bool {
	return inside(z.origin, z.suffix, name)
}

func inside(origin, suffix, name string) bool {
	if origin == "." {
		return true
	}
	return name == origin || strings.HasSuffix(name, suffix)
}

// additional returns the addresses of the in-zone targets of SRV and NS
// records, so a client need not ask again.
func (z *Zone) additional(answer []dns.RR) []dns.RR {
	return additional(answer, func(name string) []rrset {
		if n, ok := z.names.Get(name); ok {
			return n.sets
		}
		return nil
	})
}

// additional is the additional section of answer, with sets giving the
// records of a name.
func additional(answer []dns.RR, sets func(name string) []rrset) []dns.RR {
	var extra []dns.RR
	var seen []string // few targets per set: a slice beats a map
	for _, rr := range answer {
		target := targetOf(rr)
		if target == "" || slices.Contains(seen, target) {
			continue
		}
		seen = append(seen, target)
		s := sets(target)
		extra = append(extra, find(s, dns.TypeA)...)
		extra = append(extra, find(s, dns.TypeAAAA)...)
	}
	return extra
}

// targetOf is the name an SRV or NS record points at, "" for other types.
func targetOf(rr dns.RR) string {
	switch rr := rr.(type) {
	case *dns.SRV:
		return rr.Target
	case *dns.NS:
		return rr.Ns
	}
	return ""
}

// parent is name without its first label, "" above the root.
func parent(name string) string {
	if name == "." {
		return ""
	}
	_, rest, _ := strings.Cut(name, ".")
	if rest == "" {
		return "."
	}
	return rest
}
