package dnsserver

import (
	"encoding/binary"
	"slices"

	"github.com/miekg/dns"
)

// maxCachedBytes bounds an answer cache, keys and answers counted. At
// 10,000 hosts the answers to every name of the zone take about 4 MiB; a
// full cache drops a quarter of its answers, chosen at random, so a flood
// of random names costs misses, not memory (there is one cache per P).
const maxCachedBytes = 8 << 20

// answerCache holds packed UDP answers by the bytes of the query that asked
// (all but its ID). Unpacking the query, Reply and packing the answer were
// most of the processor's own work per query. A hit is the cached answer
// with the query's ID and its answer records in a new order: only
// uncompressed answers are kept, whose records can be moved as they are.
// One per UDP loop, so it needs no lock.
//
// When the Replier's generation moves on, the cache drops the answers for
// the names that changed (and, when the SOA serial moved, every answer
// carrying the SOA), not all of them: under a steady stream of changes
// most answers stay cached.
type answerCache struct {
	gen     uint64
	entries map[string]cachedAnswer
	byName  map[string][]string // canonical question name → keys of its answers
	withSOA []string            // keys of answers carrying the SOA
	size    int                 // bytes of keys and answers held
	order   []int               // scratch for reordering the records of a hit
	swap    func(i, j int)
}

type cachedAnswer struct {
	name string // canonical question name, "" when not by name
	wire []byte
	// spans are the offsets of the answer records and, last, the end of
	// the answer section; nil when there are fewer than two records.
	spans []int
}

func newAnswerCache() *answerCache {
	c := &answerCache{entries: make(map[string]cachedAnswer), byName: make(map[string][]string)}
	c.swap = func(i, j int) { c.order[i], c.order[j] = c.order[j], c.order[i] }
	return c
}

// sync drops what the Replier's generations since the cache's own changed
// (changed tells: see Replier.Changed), or everything when that is not
// known.
func (c *answerCache) sync(gen uint64, changed func(since, until uint64) ([]string, bool, bool)) {
	if gen == c.gen {
		return
	}
	names, soa, ok := changed(c.gen, gen)
	c.gen = gen
	if !ok {
		c.reset()
		return
	}
	for _, name := range names {
		for _, k := range c.byName[name] {
			c.drop(k)
		}
		delete(c.byName, name)
	}
	if soa {
		stale := map[string]bool{}
		for _, k := range c.withSOA {
			if a, ok := c.drop(k); ok {
				stale[a.name] = true
			}
		}
		c.size -= 16 * len(c.withSOA)
		c.withSOA = c.withSOA[:0]
		c.prune(stale)
	}
}

func (c *answerCache) drop(key string) (cachedAnswer, bool) {
	a, ok := c.entries[key]
	if ok {
		c.size -= len(key) + len(a.wire)
		delete(c.entries, key)
	}
	return a, ok
}

// prune removes the keys no longer cached from the lists of names, each
// list once: a name asked in many spellings (0x20) has a long one.
func (c *answerCache) prune(names map[string]bool) {
	for name := range names {
		keys := slices.DeleteFunc(c.byName[name], func(k string) bool { _, ok := c.entries[k]; return !ok })
		if len(keys) == 0 {
			delete(c.byName, name)
		} else {
			c.byName[name] = keys
		}
	}
}

// evict drops answers, in map order (random), until the cache holds three
// quarters of its budget, and forgets them in the name and SOA lists.
func (c *answerCache) evict() {
	stale := map[string]bool{}
	for key := range c.entries {
		if c.size <= maxCachedBytes*3/4 {
			break
		}
		a, _ := c.drop(key)
		stale[a.name] = true
	}
	c.prune(stale)
	live := c.withSOA[:0]
	seen := make(map[string]bool, len(c.withSOA))
	for _, k := range c.withSOA {
		if _, ok := c.entries[k]; ok && !seen[k] {
			seen[k] = true
			live = append(live, k)
		}
	}
	c.size -= 16 * (len(c.withSOA) - len(live))
	clear(c.withSOA[len(live):])
	c.withSOA = live
}

func (c *answerCache) reset() {
	clear(c.entries)
	clear(c.byName)
	c.withSOA = c.withSOA[:0]
	c.size = 0
}

// get copies the answer to query into buf, shuffled by shuffle; nil when
// there is none.
func (c *answerCache) get(query, buf []byte, shuffle func(n int, swap func(i, j int))) []byte {
	a, ok := c.entries[string(query[2:])]
	if !ok || len(a.wire) > len(buf) {
		return nil
	}
	out := buf[:len(a.wire)]
	copy(out, a.wire)
	copy(out, query[:2]) // the ID
	if n := len(a.spans) - 1; n > 1 {
		c.order = c.order[:0]
		for i := range n {
			c.order = append(c.order, i)
		}
		shuffle(n, c.swap)
		off := a.spans[0]
		for _, i := range c.order {
			off += copy(out[off:], a.wire[a.spans[i]:a.spans[i+1]])
		}
	}
	return out
}

// put keeps wire, the packed reply m to query, when its records can be
// reordered as bytes.
func (c *answerCache) put(query, wire []byte, m *dns.Msg) {
	if m.Compress || m.Truncated || len(query) > maxQuerySize/8 {
		return
	}
	spans, ok := answerSpans(wire, len(m.Question), len(m.Answer))
	if !ok {
		return
	}
	key := string(query[2:])
	if _, ok := c.entries[key]; ok {
		return
	}
	soa := carriesSOA(m)
	if c.size += len(key) + len(wire); c.size > maxCachedBytes-16 {
		c.evict()
	}
	a := cachedAnswer{wire: append([]byte(nil), wire...), spans: spans}
	if len(m.Question) == 1 { // the others' answers do not depend on the zone
		// Not listed yet: the key was not cached, and a key leaves its
		// list when it leaves the cache (prune).
		a.name = dns.CanonicalName(m.Question[0].Name)
		c.byName[a.name] = append(c.byName[a.name], key)
	}
	c.entries[key] = a
	if soa {
		// A key dropped by name and cached again is listed twice until
		// the serial moves: counted, so the budget bounds the list too.
		c.withSOA = append(c.withSOA, key)
		c.size += 16
	}
}

// carriesSOA reports whether m has the zone's SOA in its answer or
// authority section, whose serial moves with the zone's revision.
func carriesSOA(m *dns.Msg) bool {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeSOA {
				return true
			}
		}
	}
	return false
}

// answerSpans finds the answer records of an uncompressed message with qd
// questions and an answers: their offsets and the end of the last; nil when
// there are fewer than two. False when the message is not what it says.
func answerSpans(wire []byte, qd, an int) ([]int, bool) {
	off := 12
	for range qd {
		var ok bool
		if off, ok = skipName(wire, off); !ok || off+4 > len(wire) {
			return nil, false
		}
		off += 4
	}
	var spans []int
	if an > 1 {
		spans = make([]int, 0, an+1)
	}
	for range an {
		if spans != nil {
			spans = append(spans, off)
		}
		var ok bool
		if off, ok = skipName(wire, off); !ok || off+10 > len(wire) {
			return nil, false
		}
		off += 10 + int(binary.BigEndian.Uint16(wire[off+8:]))
		if off > len(wire) {
			return nil, false
		}
	}
	if spans != nil {
		spans = append(spans, off)
	}
	return spans, true
}

// skipName returns the offset after the name at off, which must be
// uncompressed.
func skipName(wire []byte, off int) (int, bool) {
	for off < len(wire) {
		l := int(wire[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xC0 != 0: // a pointer or an extended label: not ours to move
			return 0, false
		}
		off += 1 + l
	}
	return 0, false
}
