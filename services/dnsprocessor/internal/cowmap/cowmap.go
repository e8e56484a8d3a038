// Package cowmap is an immutable map from strings, changed by copying only
// the part that changes. Keys are spread over a fixed number of shards,
// each a plain Go map; an edit copies the pointers on the way to each shard
// it writes and that shard, once, so a change to one key of a map of any
// size costs the size of one shard, and every Map already handed out stays
// as it was. The dns processor's host state and zone are held in them:
// many readers, one writer, a new version per change.
package cowmap

import (
	"hash/maphash"
	"iter"
)

// The shards are held in two levels of fan each: an edit copies the top
// level, the blocks of shard pointers it writes under and the shards it
// writes, a few hundred bytes, rather than one array of every shard.
const (
	fan        = 64
	shardCount = fan * fan
)

// At 10,000 hosts the zone holds about 20,000 names, 5 to a shard: an
// edit of one key copies 1 KiB of pointers and a map of 5 entries. With
// 32×32 shards the 20-entry copies made a change at 10,000 hosts cost a
// quarter more CPU (BenchmarkChange in package zone).

var seed = maphash.MakeSeed()

func shardOf(k string) int { return int(maphash.String(seed, k) % shardCount) }

type block[V any] [fan]map[string]V

// Map is an immutable map. The zero value is an empty map.
type Map[V any] struct {
	top *[fan]*block[V] // nil: every shard empty
	n   int
}

func (m Map[V]) shard(i int) map[string]V {
	if m.top == nil {
		return nil
	}
	if b := m.top[i/fan]; b != nil {
		return b[i%fan]
	}
	return nil
}

// Get returns the value of k.
func (m Map[V]) Get(k string) (V, bool) {
	v, ok := m.shard(shardOf(k))[k]
	return v, ok
}

// Len is the number of keys.
func (m Map[V]) Len() int { return m.n }

// All iterates over the keys and values in no particular order.
func (m Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		if m.top == nil {
			return
		}
		for _, b := range m.top {
			if b == nil {
				continue
			}
			for _, sh := range b {
				for k, v := range sh {
					if !yield(k, v) {
						return
					}
				}
			}
		}
	}
}

// Edit starts an edit of a copy of m; m itself never changes.
func (m Map[V]) Edit() *Edit[V] {
	e := &Edit[V]{m: Map[V]{top: new([fan]*block[V]), n: m.n}}
	if m.top != nil {
		*e.m.top = *m.top
	}
	return e
}

// Edit is a copy of a Map being changed, by one goroutine. Blocks and
// shards it has not written to are still shared with the Map it came from.
type Edit[V any] struct {
	m           Map[V]
	ownedBlocks uint64      // bit i: top[i] was copied by this edit
	ownedShards [fan]uint64 // bit j of [i]: shard j of top[i] was
}

// Get returns the value of k as edited so far.
func (e *Edit[V]) Get(k string) (V, bool) { return e.m.Get(k) }

// All iterates over the keys and values as edited so far, in no
// particular order. The edit must not change while it runs.
func (e *Edit[V]) All() iter.Seq2[string, V] { return e.m.All() }

// Set sets k to v.
func (e *Edit[V]) Set(k string, v V) {
	sh := e.own(shardOf(k))
	if _, ok := sh[k]; !ok {
		e.m.n++
	}
	sh[k] = v
}

// Delete removes k.
func (e *Edit[V]) Delete(k string) {
	i := shardOf(k)
	if _, ok := e.m.shard(i)[k]; !ok {
		return
	}
	delete(e.own(i), k)
	e.m.n--
}

func (e *Edit[V]) own(i int) map[string]V {
	hi, lo := i/fan, i%fan
	if e.ownedBlocks&(1<<hi) == 0 {
		b := new(block[V])
		if old := e.m.top[hi]; old != nil {
			*b = *old
		}
		e.m.top[hi] = b
		e.ownedBlocks |= 1 << hi
	}
	b := e.m.top[hi]
	if e.ownedShards[hi]&(1<<lo) == 0 {
		sh := make(map[string]V, len(b[lo])+1)
		for k, v := range b[lo] {
			sh[k] = v
		}
		b[lo] = sh
		e.ownedShards[hi] |= 1 << lo
	}
	return b[lo]
}

// Map returns the edited map. The edit must not be used after it.
func (e *Edit[V]) Map() Map[V] { return e.m }
