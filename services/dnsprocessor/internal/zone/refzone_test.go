package zone

// The zone builder as it was before the Index: every name built from every
// host at once. The property test holds the Index to it.

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// refZone is a zone built from one snapshot, every name at once.
type refZone struct {
	origin   string
	revision uint64
	names    map[string]refRRsets     // every name that exists, empty non-terminals included
	extra    map[refNameType][]dns.RR // the additional section of each SRV and NS set
	soa      *dns.SOA                 // answered for SOA questions
	negSOA   *dns.SOA                 // the authority of negative answers
	negNs    []dns.RR                 // negSOA alone, shared by every negative Result
	suffix   string                   // "." + origin, what every name below it ends with
}

// refRRsets holds a name's records by type; empty for an empty non-terminal.
type refRRsets map[uint16][]dns.RR

type refNameType struct {
	name  string
	qtype uint16
}

// refBuild builds the zone of snap under cfg. Failed hosts, critical
// instances, and names that cannot be DNS labels are left out.
func refBuild(cfg Config, snap *hoststate.Snapshot) (*refZone, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	b := refBuilder{cfg: cfg, z: &refZone{origin: cfg.Origin, revision: snap.Revision, names: map[string]refRRsets{}, extra: map[refNameType][]dns.RR{}}}
	b.apex(snap.Revision)
	for _, h := range snap.Hosts() {
		if !h.Failed {
			b.host(h)
		}
	}
	b.finish()
	return b.z, nil
}

// Lookup answers qname (any case) and qtype from the zone.
func (z *refZone) Lookup(qname string, qtype uint16) Result {
	name := dns.CanonicalName(qname)
	if !z.refInside(name) {
		return Result{Rcode: dns.RcodeRefused}
	}
	sets, ok := z.names[name]
	if !ok {
		return Result{Rcode: dns.RcodeNameError, Authoritative: true, Ns: z.negNs}
	}
	var answer, extra []dns.RR
	if qtype == dns.TypeANY {
		for _, t := range refSortedTypes(sets) {
			answer = append(answer, sets[t]...)
		}
		extra = z.refAdditional(answer)
	} else {
		answer, extra = sets[qtype], z.extra[refNameType{name, qtype}]
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
func (z *refZone) refInside(name string) bool {
	if z.origin == "." {
		return true
	}
	return name == z.origin || strings.HasSuffix(name, z.suffix)
}

// additional returns the addresses of the in-zone targets of SRV and NS
// records, so a client need not ask again.
func (z *refZone) refAdditional(answer []dns.RR) []dns.RR {
	var extra []dns.RR
	seen := map[string]bool{}
	for _, rr := range answer {
		var target string
		switch rr := rr.(type) {
		case *dns.SRV:
			target = rr.Target
		case *dns.NS:
			target = rr.Ns
		default:
			continue
		}
		if seen[target] {
			continue
		}
		seen[target] = true
		if sets, ok := z.names[target]; ok {
			extra = append(extra, sets[dns.TypeA]...)
			extra = append(extra, sets[dns.TypeAAAA]...)
		}
	}
	return extra
}

func refSortedTypes(sets refRRsets) []uint16 {
	types := make([]uint16, 0, len(sets))
	for t := range sets {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

type refBuilder struct {
	cfg Config
	z   *refZone
}

func (b *refBuilder) add(rr dns.RR) {
	name := rr.Header().Name
	sets := b.z.names[name]
	if sets == nil {
		sets = refRRsets{}
		b.z.names[name] = sets
	}
	t := rr.Header().Rrtype
	sets[t] = append(sets[t], rr)
}

func (b *refBuilder) refHdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

func (b *refBuilder) apex(revision uint64) {
	c := b.cfg
	soa := func(ttl uint32) *dns.SOA {
		return &dns.SOA{
			Hdr:     b.refHdr(c.Origin, dns.TypeSOA, ttl),
			Ns:      c.NameServers[0].Name,
			Mbox:    c.Hostmaster,
			Serial:  uint32(revision),
			Refresh: c.Refresh,
			Retry:   c.Retry,
			Expire:  c.Expire,
			Minttl:  c.TTL.Negative,
		}
	}
	b.z.soa = soa(c.TTL.Apex)
	b.z.negSOA = soa(c.TTL.Negative)
	b.z.negNs = []dns.RR{b.z.negSOA}
	b.z.suffix = "." + c.Origin
	b.add(b.z.soa)
	for _, ns := range c.NameServers {
		b.add(&dns.NS{Hdr: b.refHdr(c.Origin, dns.TypeNS, c.TTL.Apex), Ns: ns.Name})
		if dns.IsSubDomain(c.Origin, ns.Name) {
			b.addrs(ns.Name, ns.Addrs, c.TTL.Apex)
		}
	}
}

func (b *refBuilder) addrs(name string, addrs []netip.Addr, ttl uint32) {
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4():
			b.add(&dns.A{Hdr: b.refHdr(name, dns.TypeA, ttl), A: a.AsSlice()})
		case a.Is6():
			b.add(&dns.AAAA{Hdr: b.refHdr(name, dns.TypeAAAA, ttl), AAAA: a.AsSlice()})
		}
	}
}

func (b *refBuilder) host(h *hoststate.Host) {
	node, ok := Label(h.Name)
	if !ok {
		return
	}
	c := b.cfg
	target := node + ".node." + c.Origin
	b.addrs(target, h.Addrs, c.TTL.Node)
	keys := make([]string, 0, len(h.Meta))
	for k := range h.Meta {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.add(&dns.TXT{Hdr: b.refHdr(target, dns.TypeTXT, c.TTL.Node), Txt: chunks(k + "=" + h.Meta[k])})
	}

	for _, s := range h.Services {
		name, ok := Label(s.Name)
		if !ok || !s.Health.Serving() {
			continue
		}
		svc := name + ".service." + c.Origin
		weight := s.Weight
		if weight == 0 {
			weight = 1
		}
		srv := func(owner string) {
			b.add(&dns.SRV{Hdr: b.refHdr(owner, dns.TypeSRV, c.TTL.Service), Priority: 1, Weight: weight, Port: s.Port, Target: target})
		}
		owners := []string{svc}
		for _, tag := range s.Tags {
			if tag, ok := Label(tag); ok {
				owners = append(owners, tag+"."+svc)
			}
		}
		for _, owner := range owners {
			b.addrs(owner, h.Addrs, c.TTL.Service)
			srv(owner)
		}
		srv("_" + name + "._tcp.service." + c.Origin)
	}
}

// finish removes duplicate records (an address shared by two instances),
// orders every set the same way on every build, and adds the empty
// non-terminals between each name and the apex (RFC 8020: they exist).
func (b *refBuilder) finish() {
	for name, sets := range b.z.names {
		for t, rrs := range sets {
			slices.SortFunc(rrs, func(x, y dns.RR) int { return cmp.Compare(x.String(), y.String()) })
			sets[t] = slices.CompactFunc(rrs, func(x, y dns.RR) bool { return dns.IsDuplicate(x, y) })
		}
		for n := parent(name); n != "" && dns.IsSubDomain(b.z.origin, n); n = parent(n) {
			if _, ok := b.z.names[n]; ok {
				break
			}
			b.z.names[n] = refRRsets{}
		}
	}
	// Each query for an SRV or NS set gets the same additional section:
	// found once here instead of on every query.
	for name, sets := range b.z.names {
		for _, t := range []uint16{dns.TypeSRV, dns.TypeNS} {
			if extra := b.z.refAdditional(sets[t]); len(extra) > 0 {
				b.z.extra[refNameType{name, t}] = extra
			}
		}
	}
}
