package dnsserver

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// maxCachedBytes bounds an answer cache, keys and answers counted. A full
// cache is emptied and starts over: a zone's answers are a few hundred
// kilobytes, and a flood of random names should cost misses, not memory
// (there is one cache per P).
const maxCachedBytes = 2 << 20

// answerCache holds packed UDP answers by the bytes of the query that asked
// (all but its ID), for one generation of the Replier. Unpacking the query,
// Reply and packing the answer were most of the processor's own work per
// query. A hit is the cached answer with the query's ID and its answer
// records in a new order: only uncompressed answers are kept, whose records
// can be moved as they are. One per UDP loop, so it needs no lock.
type answerCache struct {
	gen     uint64
	entries map[string]cachedAnswer
	size    int   // bytes of keys and answers held
	order   []int // scratch for reordering the records of a hit
	swap    func(i, j int)
}

type cachedAnswer struct {
	wire []byte
	// spans are the offsets of the answer records and, last, the end of
	// the answer section; nil when there are fewer than two records.
	spans []int
}

func newAnswerCache() *answerCache {
	c := &answerCache{entries: make(map[string]cachedAnswer)}
	c.swap = func(i, j int) { c.order[i], c.order[j] = c.order[j], c.order[i] }
	return c
}

// sync empties the cache when the Replier's generation has moved on.
func (c *answerCache) sync(gen uint64) {
	if gen != c.gen {
		c.reset()
		c.gen = gen
	}
}

func (c *answerCache) reset() {
	clear(c.entries)
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
	if c.size += len(key) + len(wire); c.size > maxCachedBytes {
		c.reset()
		c.size = len(key) + len(wire)
	}
	c.entries[key] = cachedAnswer{wire: append([]byte(nil), wire...), spans: spans}
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
