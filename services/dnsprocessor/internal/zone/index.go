package zone

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// Index keeps what each host contributes to each name of the zone, so a
// change to one host rebuilds only the names that host is part of (and
// the few whose additional section or existence depends on them), as
// CoreDNS's kubernetes plugin updates its indexes per object. The zones it
// returns share every other name with the zone before.
//
// An Index has one writer: it is not safe for concurrent use. The zones it
// returns are.
type Index struct {
	cfg   Config
	names map[string]*nameState
	hosts map[string][]string // the names each host has records at
	// referrers holds, per in-zone name, the names whose SRV or NS records
	// point at it: their additional section holds its addresses.
	referrers map[string][]string
	zone      *Zone // the last one returned, never changed: readers hold it

	// the update in progress
	dirty map[string]bool // names whose contributions changed
	negNs []dns.RR        // the next zone's negative-answer SOA
}

// nameState is the writer's side of one name.
type nameState struct {
	contrib []contribution // by host, "" for the apex's own records
	below   int            // names with records below this one
	sets    []rrset        // merged from contrib; nil when none
	targets []string       // of the SRV and NS records in sets
}

func (n *nameState) exists() bool { return len(n.sets) > 0 || n.below > 0 }

// contribution is one host's records at one name, in presentation order.
type contribution struct {
	host string
	rrs  []dns.RR
}

// keyed is a record and its presentation form, which orders a set the same
// way on every build. Keys are made while sorting and not kept: at 10,000
// hosts they would be a tenth of the processor's memory.
type keyed struct {
	key string
	rr  dns.RR
}

func byKey(a, b keyed) int {
	return cmp.Or(cmp.Compare(a.rr.Header().Rrtype, b.rr.Header().Rrtype), cmp.Compare(a.key, b.key))
}

// sameRR tells records apart as their presentation forms would.
func sameRR(a, b dns.RR) bool { return a.Header().Ttl == b.Header().Ttl && dns.IsDuplicate(a, b) }

// apexHost is the contributor of the SOA, NS and glue records.
const apexHost = ""

// NewIndex returns an index for cfg, holding no zone until Reset.
func NewIndex(cfg Config) (*Index, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	return &Index{cfg: cfg}, nil
}

// Zone is the last zone returned, nil before Reset.
func (x *Index) Zone() *Zone { return x.zone }

// Reset builds the zone of snap from scratch, forgetting everything held.
func (x *Index) Reset(snap *hoststate.Snapshot) *Zone {
	x.names = map[string]*nameState{}
	x.hosts = map[string][]string{}
	x.referrers = map[string][]string{}
	x.zone = &Zone{origin: x.cfg.Origin, suffix: "." + x.cfg.Origin}
	x.begin()
	x.apex(snap.Revision)
	for h := range snap.All() {
		x.host(h.Name, h)
	}
	z, _ := x.commit(snap)
	return z
}

// Update makes the zone of snap from the last one, given the hosts that
// changed since (hoststate.Snapshot.Changed), and returns it with the
// names whose answers changed: their records, their additional section,
// or whether they exist. When the SOA serial changed, the origin is among
// them, and every negative answer changed too (it carries the SOA). Reset
// comes first: Update changes the zone Reset built.
func (x *Index) Update(snap *hoststate.Snapshot, hosts []string) (*Zone, []string) {
	x.begin()
	if snap.Revision != x.zone.revision {
		x.apex(snap.Revision)
	}
	for _, name := range hosts {
		h, _ := snap.Host(name)
		x.host(name, h)
	}
	return x.commit(snap)
}

func (x *Index) begin() { x.dirty = map[string]bool{} }

// apex sets the records of the origin and the name servers' glue.
func (x *Index) apex(revision uint64) {
	c := x.cfg
	soa := func(ttl uint32) *dns.SOA {
		return &dns.SOA{
			Hdr:     hdr(c.Origin, dns.TypeSOA, ttl),
			Ns:      c.NameServers[0].Name,
			Mbox:    c.Hostmaster,
			Serial:  uint32(revision),
			Refresh: c.Refresh,
			Retry:   c.Retry,
			Expire:  c.Expire,
			Minttl:  c.TTL.Negative,
		}
	}
	x.negNs = []dns.RR{soa(c.TTL.Negative)}
	r := records{}
	r.add(soa(c.TTL.Apex))
	for _, ns := range c.NameServers {
		r.add(&dns.NS{Hdr: hdr(c.Origin, dns.TypeNS, c.TTL.Apex), Ns: ns.Name})
		if dns.IsSubDomain(c.Origin, ns.Name) {
			r.addrs(ns.Name, ns.Addrs, c.TTL.Apex)
		}
	}
	x.contribute(apexHost, r.sort())
}

// host sets the records of the named host from h, nil when it has none
// to serve.
func (x *Index) host(name string, h *hoststate.Host) {
	r := records{}
	if h != nil && !h.Failed {
		r = hostRecords(x.cfg, h)
	}
	x.contribute(name, r.sort())
}

// contribute replaces host's records with r, marking the names whose
// contributions differ.
func (x *Index) contribute(host string, r records) {
	old := x.hosts[host]
	for _, name := range old {
		if _, ok := r[name]; !ok {
			x.set(name, host, nil)
		}
	}
	names := make([]string, 0, len(r))
	for name, rrs := range r {
		names = append(names, name)
		x.set(name, host, rrs)
	}
	if len(names) == 0 {
		delete(x.hosts, host)
	} else {
		x.hosts[host] = names
	}
}

// set replaces host's records at name with rrs (in presentation order).
func (x *Index) set(name, host string, rrs []dns.RR) {
	n := x.names[name]
	if n == nil {
		if len(rrs) == 0 {
			return
		}
		n = &nameState{}
		x.names[name] = n
	}
	i := slices.IndexFunc(n.contrib, func(c contribution) bool { return c.host == host })
	switch {
	case i < 0 && len(rrs) == 0:
		return
	case i < 0:
		n.contrib = append(n.contrib, contribution{host, rrs})
	case len(rrs) == 0:
		n.contrib = slices.Delete(n.contrib, i, i+1)
	case slices.EqualFunc(n.contrib[i].rrs, rrs, sameRR):
		return
	default:
		n.contrib[i].rrs = rrs
	}
	x.dirty[name] = true
}

// commit merges the changed names' records, follows what depends on them
// (additional sections, empty non-terminals), and publishes the next zone.
func (x *Index) commit(snap *hoststate.Snapshot) (*Zone, []string) {
	publish := map[string]bool{}
	for name := range x.dirty {
		n := x.names[name]
		had := len(n.sets) > 0
		n.sets = merge(n.contrib)
		if has := len(n.sets) > 0; has != had {
			x.ancestors(name, has, publish)
		}
		targets := targetsOf(n.sets)
		for _, t := range n.targets {
			if !slices.Contains(targets, t) {
				x.referrers[t] = without(x.referrers[t], name)
			}
		}
		for _, t := range targets {
			if !slices.Contains(n.targets, t) {
				x.referrers[t] = append(x.referrers[t], name)
			}
		}
		n.targets = targets
		publish[name] = true
		for _, owner := range x.referrers[name] {
			publish[owner] = true
		}
	}
	x.dirty = nil

	z := *x.zone
	z.revision, z.snap, z.negNs = snap.Revision, snap, x.negNs
	ed := x.zone.names.Edit()
	changed := make([]string, 0, len(publish))
	for name := range publish {
		changed = append(changed, name)
		n := x.names[name]
		if n == nil || !n.exists() {
			ed.Delete(name)
			if n != nil && len(n.contrib) == 0 {
				delete(x.names, name)
			}
			continue
		}
		ed.Set(name, x.node(n))
	}
	z.names = ed.Map()
	x.zone = &z
	return x.zone, changed
}

// ancestors counts a name that gained (has) or lost its last record in
// the names above it up to the origin, marking those whose existence
// changed: an empty non-terminal exists while something is below it
// (RFC 8020).
func (x *Index) ancestors(name string, has bool, publish map[string]bool) {
	for a := parent(name); a != "" && inside(x.cfg.Origin, "."+x.cfg.Origin, a); a = parent(a) {
		n := x.names[a]
		if n == nil {
			n = &nameState{}
			x.names[a] = n
		}
		if has {
			n.below++
			if n.below == 1 && len(n.sets) == 0 {
				publish[a] = true
			}
		} else {
			n.below--
			if n.below == 0 && len(n.sets) == 0 {
				publish[a] = true
			}
		}
	}
}

// node is the published form of n: its sets and the additional section
// of its SRV and NS sets.
func (x *Index) node(n *nameState) *node {
	out := &node{sets: n.sets}
	for _, t := range []uint16{dns.TypeNS, dns.TypeSRV} {
		extra := additional(find(n.sets, t), func(name string) []rrset {
			if m := x.names[name]; m != nil {
				return m.sets
			}
			return nil
		})
		if len(extra) > 0 {
			out.extra = append(out.extra, rrset{t, extra})
		}
	}
	return out
}

// merge is the record sets of a name from its contributions: by type,
// each ordered by presentation form, duplicates (an address two instances
// share) removed.
func merge(contrib []contribution) []rrset {
	var all []keyed
	for _, c := range contrib {
		for _, rr := range c.rrs {
			all = append(all, keyed{rr.String(), rr})
		}
	}
	if len(all) == 0 {
		return nil
	}
	slices.SortStableFunc(all, byKey)
	var sets []rrset
	for i := 0; i < len(all); {
		t := all[i].rr.Header().Rrtype
		j := i
		var rrs []dns.RR
		for ; j < len(all) && all[j].rr.Header().Rrtype == t; j++ {
			if len(rrs) > 0 && dns.IsDuplicate(rrs[len(rrs)-1], all[j].rr) {
				continue
			}
			rrs = append(rrs, all[j].rr)
		}
		sets = append(sets, rrset{t, slices.Clip(rrs)})
		i = j
	}
	return sets
}

func targetsOf(sets []rrset) []string {
	var out []string
	for _, s := range sets {
		if s.t != dns.TypeSRV && s.t != dns.TypeNS {
			continue
		}
		for _, rr := range s.rrs {
			if t := targetOf(rr); !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}

func without(names []string, name string) []string {
	if i := slices.Index(names, name); i >= 0 {
		names = slices.Delete(names, i, i+1)
	}
	if len(names) == 0 {
		return nil
	}
	return names
}

// records are one contributor's records by owner name.
type records map[string][]dns.RR

func (r records) add(rr dns.RR) {
	name := rr.Header().Name
	r[name] = append(r[name], rr)
}

// sort puts each name's records in presentation order, so two
// contributions compare record by record.
func (r records) sort() records {
	for name, rrs := range r {
		if len(rrs) < 2 {
			continue
		}
		ks := make([]keyed, len(rrs))
		for i, rr := range rrs {
			ks[i] = keyed{rr.String(), rr}
		}
		slices.SortStableFunc(ks, byKey)
		for i, k := range ks {
			rrs[i] = k.rr
		}
		r[name] = slices.Clip(rrs)
	}
	return r
}

func (r records) addrs(name string, addrs []netip.Addr, ttl uint32) {
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4():
			r.add(&dns.A{Hdr: hdr(name, dns.TypeA, ttl), A: a.AsSlice()})
		case a.Is6():
			r.add(&dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, ttl), AAAA: a.AsSlice()})
		}
	}
}

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

// hostRecords are the records of one served host: its node name's
// addresses and metadata, and per serving instance the service's, its
// tags' and the SRV owner's records.
func hostRecords(c Config, h *hoststate.Host) records {
	r := records{}
	node, ok := Label(h.Name)
	if !ok {
		return r
	}
	target := node + ".node." + c.Origin
	r.addrs(target, h.Addrs, c.TTL.Node)
	for k, v := range h.Meta {
		r.add(&dns.TXT{Hdr: hdr(target, dns.TypeTXT, c.TTL.Node), Txt: chunks(k + "=" + v)})
	}
	for _, s := range h.Services {
		name, ok := Label(s.Name)
		if !ok || !s.Health.Serving() {
			continue
		}
		svc := name + ".service." + c.Origin
		weight := max(s.Weight, 1)
		srv := func(owner string) {
			r.add(&dns.SRV{Hdr: hdr(owner, dns.TypeSRV, c.TTL.Service), Priority: 1, Weight: weight, Port: s.Port, Target: target})
		}
		owners := []string{svc}
		for _, tag := range s.Tags {
			if tag, ok := Label(tag); ok {
				owners = append(owners, tag+"."+svc)
			}
		}
		for _, owner := range owners {
			r.addrs(owner, h.Addrs, c.TTL.Service)
			srv(owner)
		}
		srv("_" + name + "._tcp.service." + c.Origin)
	}
	return r
}

// chunks splits a TXT string into the 255-byte pieces the wire allows.
func chunks(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}
