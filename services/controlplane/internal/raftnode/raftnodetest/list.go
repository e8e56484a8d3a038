package raftnodetest

import (
	"encoding/json"
	"slices"
	"sync"

	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode"
)

// List is a trivial state machine for tests: an append-only list of
// strings. Apply returns the list's new length; a snapshot is the list as
// JSON.
type List struct {
	mu    sync.Mutex
	items []string
}

// NewList is a constructor to hand to NewCluster; Cluster.List finds each
// member's list again.
func NewList() raftnode.StateMachine { return &List{} }

// Apply appends data.
func (l *List) Apply(_ uint64, data []byte, _ any) any {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items = append(l.items, string(data))
	return len(l.items)
}

// Snapshot copies the list now and encodes the copy later.
func (l *List) Snapshot() (func() ([]byte, error), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	items := slices.Clone(l.items)
	return func() ([]byte, error) { return json.Marshal(items) }, nil
}

// Restore replaces the list.
func (l *List) Restore(data []byte) error {
	var items []string
	if err := json.Unmarshal(data, &items); err != nil {
		return err
	}
	l.mu.Lock()
	l.items = items
	l.mu.Unlock()
	return nil
}

// Items returns a copy of the list.
func (l *List) Items() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.items)
}

// Has reports whether item was applied.
func (l *List) Has(item string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.items, item)
}
