// Package cowmap is an immutable map from strings, changed by copying only
// the part that changes. Keys are spread over a fixed number of shards,
// each a plain Go map; an edit copies the array of shard pointers and each
// shard it writes to, once, so a change to one key of a map of any size
// costs the size of one shard, and every Map already handed out stays as
// it was. The dns processor's host state and zone are held in them: many
// readers, one writer, a new version per change.
package cowmap

import (
	"hash/maphash"
	"iter"
)

// shardCount is the number of shards. At 10,000 hosts the zone holds about
// 20,000 names, 20 to a shard: an edit copies 8 KiB of pointers and a
// shard or two of 20 entries.
const shardCount = 1024

var seed = maphash.MakeSeed()

func shardOf(k string) int { return int(maphash.String(seed, k) % shardCount) }

// Map is an immutable map. The zero value is an empty map.
type Map[V any] struct {
	shards *[shardCount]map[string]V // nil: every shard empty
	n      int
}

// Get returns the value of k.
func (m Map[V]) Get(k string) (V, bool) {
	if m.shards == nil {
		var zero V
		return zero, false
	}
	v, ok := m.shards[shardOf(k)][k]
	return v, ok
}

// Len is the number of keys.
func (m Map[V]) Len() int { return m.n }

// All iterates over the keys and values in no particular order.
func (m Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		if m.shards == nil {
			return
		}
		for _, sh := range m.shards {
			for k, v := range sh {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// Edit starts an edit of a copy of m; m itself never changes.
func (m Map[V]) Edit() *Edit[V] {
	e := &Edit[V]{n: m.n}
	if m.shards != nil {
		e.shards = *m.shards
	}
	return e
}

// Edit is a copy of a Map being changed, by one goroutine. Shards it has
// not written to are still shared with the Map it came from.
type Edit[V any] struct {
	shards [shardCount]map[string]V
	owned  [shardCount]bool // copied by this edit: written in place
	n      int
}

// Get returns the value of k as edited so far.
func (e *Edit[V]) Get(k string) (V, bool) {
	v, ok := e.shards[shardOf(k)][k]
	return v, ok
}

// All iterates over the keys and values as edited so far, in no
// particular order. The edit must not change while it runs.
func (e *Edit[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, sh := range e.shards {
			for k, v := range sh {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// Set sets k to v.
func (e *Edit[V]) Set(k string, v V) {
	i := shardOf(k)
	sh := e.own(i)
	if _, ok := sh[k]; !ok {
		e.n++
	}
	sh[k] = v
}

// Delete removes k.
func (e *Edit[V]) Delete(k string) {
	i := shardOf(k)
	if _, ok := e.shards[i][k]; !ok {
		return
	}
	delete(e.own(i), k)
	e.n--
}

func (e *Edit[V]) own(i int) map[string]V {
	if !e.owned[i] {
		sh := make(map[string]V, len(e.shards[i])+1)
		for k, v := range e.shards[i] {
			sh[k] = v
		}
		e.shards[i], e.owned[i] = sh, true
	}
	return e.shards[i]
}

// Map returns the edited map. The edit must not be used after it.
func (e *Edit[V]) Map() Map[V] {
	shards := e.shards
	return Map[V]{shards: &shards, n: e.n}
}
