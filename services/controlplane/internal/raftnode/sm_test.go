package raftnode

import (
	"encoding/json"
	"sync"
)

// listSM is an append-only list of strings, for the tests inside the
// package (those outside use raftnodetest.List, which cannot be imported
// here without a cycle).
type listSM struct {
	mu    sync.Mutex
	items []string
}

func (s *listSM) Apply(_ uint64, data []byte, _ any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, string(data))
	return len(s.items)
}

func (s *listSM) Snapshot() (func() ([]byte, error), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := append([]string(nil), s.items...)
	return func() ([]byte, error) { return json.Marshal(items) }, nil
}

func (s *listSM) Restore(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = nil
	return json.Unmarshal(b, &s.items)
}

func (s *listSM) has(item string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range s.items {
		if it == item {
			return true
		}
	}
	return false
}
