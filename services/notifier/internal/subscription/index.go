package subscription

import (
	"maps"
	"slices"

	iradix "github.com/hashicorp/go-immutable-radix"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
)

// Index holds the compiled subscriptions by name and by prefix, so that
// matching an event costs a walk down its URI's path in a radix tree —
// the subscriptions whose prefix is a prefix of the URI — instead of a
// look at every subscription. Not safe for concurrent use.
type Index struct {
	byName map[string]*Compiled
	// byPrefix maps a prefix to the subscriptions with that prefix, by
	// name. Its values are never changed in place: a change stores a new
	// map, so a walk in progress is not disturbed.
	byPrefix *iradix.Tree
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{byName: map[string]*Compiled{}, byPrefix: iradix.New()}
}

// Len is the number of subscriptions.
func (x *Index) Len() int { return len(x.byName) }

// Get returns the subscription called name, or nil.
func (x *Index) Get(name string) *Compiled { return x.byName[name] }

// Set adds the subscription called name or replaces it.
func (x *Index) Set(name string, c *Compiled) {
	x.Delete(name)
	x.byName[name] = c
	prefix := []byte(c.Sub.GetPrefix())
	next := map[string]*Compiled{name: c}
	if v, ok := x.byPrefix.Get(prefix); ok {
		for n, o := range v.(map[string]*Compiled) {
			next[n] = o
		}
	}
	x.byPrefix, _, _ = x.byPrefix.Insert(prefix, next)
}

// Delete removes the subscription called name, if there is one.
func (x *Index) Delete(name string) {
	old := x.byName[name]
	if old == nil {
		return
	}
	delete(x.byName, name)
	prefix := []byte(old.Sub.GetPrefix())
	v, ok := x.byPrefix.Get(prefix)
	if !ok {
		return
	}
	next := make(map[string]*Compiled, len(v.(map[string]*Compiled)))
	for n, o := range v.(map[string]*Compiled) {
		if n != name {
			next[n] = o
		}
	}
	if len(next) == 0 {
		x.byPrefix, _, _ = x.byPrefix.Delete(prefix)
		return
	}
	x.byPrefix, _, _ = x.byPrefix.Insert(prefix, next)
}

// Selecting calls fn for every subscription that selects ev (Selects),
// by name. fn must not change the index.
func (x *Index) Selecting(ev delivery.Event, fn func(name string, c *Compiled)) {
	x.byPrefix.Root().WalkPath([]byte(ev.URI), func(_ []byte, v interface{}) bool {
		for name, c := range v.(map[string]*Compiled) {
			if c.Selects(ev) {
				fn(name, c)
			}
		}
		return false
	})
}

// Names returns the subscriptions' names, sorted.
func (x *Index) Names() []string {
	return slices.Sorted(maps.Keys(x.byName))
}
