// Package dnsserver answers DNS queries for the hivemind zone: a Handler
// whose Reply answers a query from the current, read-only zone, and a Server
// that runs it on UDP and TCP.
package dnsserver

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/zone"
)

// DefaultUDPSize is the EDNS0 UDP payload size advertised and the largest
// UDP answer sent: the DNS flag day 2020 value, which avoids IP
// fragmentation on every common path.
const DefaultUDPSize = 1232

// Config configures a Handler.
type Config struct {
	Zone zone.Config
	// UDPSize is the EDNS0 payload size the handler advertises and the
	// ceiling for UDP answers; a client's smaller size is honoured, down to
	// 512 (default DefaultUDPSize, at most 65535).
	UDPSize uint16
	// Shuffle reorders the records of an answer, so clients spread over
	// instances (default rand.Shuffle). Tests pass a seeded or no-op one.
	Shuffle func(n int, swap func(i, j int))
}

// DefaultConfig returns the defaults for the "hive." zone.
func DefaultConfig() Config {
	return Config{Zone: zone.DefaultConfig(), UDPSize: DefaultUDPSize}
}

// Handler answers queries from the zone of the latest snapshot. It is the
// DNS processor: Update gives it each new snapshot, and it changes the
// zone by the hosts that changed since the last one.
type Handler struct {
	cfg Config

	mu    sync.Mutex // serialises Update
	index *zone.Index
	last  *hoststate.Snapshot // the snapshot of the zone being served

	zone atomic.Pointer[zone.Zone]
	log  atomic.Pointer[changeLog]
	gen  atomic.Uint64 // counts Updates, each after its zone and log entry are stored
}

// changeLog is what each of the last generations changed: entries[i] is
// generation base+1+i. It is replaced, never changed, once published.
type changeLog struct {
	base    uint64
	entries []change
}

type change struct {
	names []string // canonical names whose answers changed
	soa   bool     // the SOA serial moved: every answer carrying it changed
	all   bool     // a zone built from scratch: anything may have changed
}

// maxChangeLog bounds the generations Changed can tell about; a cache
// further behind starts over.
const maxChangeLog = 1024

// NewHandler returns a handler that answers SERVFAIL until its first
// Update, so a resolver asks another server instead of caching a negative
// answer from one that has not bootstrapped.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.UDPSize == 0 {
		cfg.UDPSize = DefaultUDPSize
	}
	cfg.UDPSize = max(cfg.UDPSize, dns.MinMsgSize)
	if cfg.Shuffle == nil {
		cfg.Shuffle = rand.Shuffle
	}
	index, err := zone.NewIndex(cfg.Zone) // checks the zone config up front
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, index: index}
	h.log.Store(&changeLog{})
	return h, nil
}

// Update serves the zone of snap from now on. The first zone, and one
// after the host state was replaced (a Restore with Reset), is built from
// the whole snapshot; every other is the last one changed by the hosts
// that changed since.
func (h *Handler) Update(_ context.Context, snap *hoststate.Snapshot) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var (
		z  *zone.Zone
		ch change
	)
	if hosts, ok := snap.Changed(h.last); ok && h.index.Zone() != nil {
		prev := h.index.Zone()
		z, ch.names = h.index.Update(snap, hosts)
		ch.soa = z.Revision() != prev.Revision()
	} else {
		z, ch.all = h.index.Reset(snap), true
	}
	h.last = snap
	h.zone.Store(z)
	old := h.log.Load()
	next := &changeLog{base: old.base, entries: append(old.entries, ch)}
	if len(next.entries) > maxChangeLog {
		drop := len(next.entries) - maxChangeLog/2
		next.entries = append([]change(nil), next.entries[drop:]...)
		next.base += uint64(drop)
	}
	h.log.Store(next)
	h.gen.Add(1)
	return nil
}

// Zone is the zone being served, nil before the first Update.
func (h *Handler) Zone() *zone.Zone { return h.zone.Load() }

// Generation counts the zones served so far. A reply depends only on its
// query, the zone and the order Shuffle gives its answer records, so a
// reply made after Generation returned g stays right while it still
// returns g: the zone and what it changed are stored before the count
// moves.
func (h *Handler) Generation() uint64 { return h.gen.Load() }

// Changed tells what the zones of generations since+1 to until changed:
// the names (canonical) whose answers may differ, and whether every answer
// carrying the SOA (negative answers, the SOA's own) may. False when that
// is not known and any answer may differ: a zone built from scratch came
// in between, or since is older than the log kept.
func (h *Handler) Changed(since, until uint64) (names []string, soa, ok bool) {
	log := h.log.Load()
	if since > until || since < log.base || until > log.base+uint64(len(log.entries)) {
		return nil, false, false
	}
	for _, ch := range log.entries[since-log.base : until-log.base] {
		if ch.all {
			return nil, false, false
		}
		names = append(names, ch.names...)
		soa = soa || ch.soa
	}
	return names, soa, true
}

// Shuffle reorders the answer records of a reply, as Reply does.
func (h *Handler) Shuffle(n int, swap func(i, j int)) { h.cfg.Shuffle(n, swap) }

// Reply is the answer to r, sized for UDP when udp is set; nil when r must
// not be answered (it is itself a response).
func (h *Handler) Reply(r *dns.Msg, udp bool) *dns.Msg {
	if r.Response {
		return nil // answering answers is how reflection loops start
	}
	m := &dns.Msg{MsgHdr: dns.MsgHdr{
		Id:               r.Id,
		Response:         true,
		Opcode:           r.Opcode,
		RecursionDesired: r.RecursionDesired,
		CheckingDisabled: r.CheckingDisabled,
	}}

	opt, ok := requestOPT(r)
	if !ok {
		m.Rcode = dns.RcodeFormatError // RFC 6891 §6.1.1: more than one OPT
		return m
	}
	limit := dns.MaxMsgSize
	if udp {
		limit = dns.MinMsgSize
	}
	if opt != nil {
		m.Extra = append(m.Extra, h.responseOPT(opt))
		if udp {
			limit = int(min(max(opt.UDPSize(), dns.MinMsgSize), h.cfg.UDPSize))
		}
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			return m
		}
	}

	switch {
	case r.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(r.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	m.Question = []dns.Question{q}
	if rcode := checkQuestion(q); rcode != dns.RcodeSuccess {
		m.Rcode = rcode
		return m
	}
	z := h.zone.Load()
	if z == nil {
		m.Rcode = dns.RcodeServerFailure
		return m
	}

	res := z.Lookup(q.Name, q.Qtype)
	m.Rcode = res.Rcode
	m.Authoritative = res.Authoritative
	m.Answer = copyRRs(res.Answer, q.Name)
	m.Ns = copyRRs(res.Ns, "")
	m.Extra = append(copyRRs(res.Extra, ""), m.Extra...)
	if len(m.Answer) > 1 {
		h.cfg.Shuffle(len(m.Answer), func(i, j int) { m.Answer[i], m.Answer[j] = m.Answer[j], m.Answer[i] })
	}
	m.Truncate(limit)
	return m
}

// requestOPT returns the request's OPT record, nil when there is none, and
// false when there is more than one.
func requestOPT(r *dns.Msg) (*dns.OPT, bool) {
	var opt *dns.OPT
	for _, rr := range r.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil {
				return nil, false
			}
			opt = o
		}
	}
	return opt, true
}

// responseOPT is the OPT answered to a client that sent req: our payload
// size, version 0, the DO bit copied (RFC 3225), no options.
func (h *Handler) responseOPT(req *dns.OPT) *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(h.cfg.UDPSize)
	if req.Do() {
		o.SetDo()
	}
	return o
}

// checkQuestion refuses what an authoritative server without transfers
// does not answer.
func checkQuestion(q dns.Question) int {
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return dns.RcodeRefused
	}
	switch q.Qtype {
	case dns.TypeOPT, dns.TypeNone:
		return dns.RcodeFormatError
	case dns.TypeAXFR, dns.TypeIXFR:
		return dns.RcodeRefused // the zone is not offered for transfer
	case dns.TypeMAILA, dns.TypeMAILB:
		return dns.RcodeNotImplemented
	}
	return dns.RcodeSuccess
}

// copyRRs copies records shared with the zone, giving them owner when it is
// not empty (the question's spelling, so 0x20-randomised names come back as
// asked).
func copyRRs(rrs []dns.RR, owner string) []dns.RR {
	if len(rrs) == 0 {
		return nil
	}
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = copyRR(rr)
		if owner != "" {
			out[i].Header().Name = owner
		}
	}
	return out
}

// copyRR copies the record's struct, header included, for the types the
// zone holds; their rdata slices (addresses, TXT strings) stay shared, as
// packing only reads them. This is per record per query: dns.Copy would
// clone the rdata too.
func copyRR(rr dns.RR) dns.RR {
	switch rr := rr.(type) {
	case *dns.A:
		c := *rr
		return &c
	case *dns.AAAA:
		c := *rr
		return &c
	case *dns.SRV:
		c := *rr
		return &c
	case *dns.TXT:
		c := *rr
		return &c
	case *dns.NS:
		c := *rr
		return &c
	case *dns.SOA:
		c := *rr
		return &c
	}
	return dns.Copy(rr)
}
