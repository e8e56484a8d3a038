package fsm

import (
	"fmt"
	"sort"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Snapshot captures the whole state. The messages it holds are shared with
// the machine and must not be modified.
func (m *Machine) Snapshot() *raftv1.Snapshot {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := &raftv1.Snapshot{
		Revision:       m.rev,
		Epoch:          m.epoch,
		OldestRevision: m.oldest,
		LastHlc:        m.lastHLC,
		Events:         append([]*hivemindv1.Event(nil), m.events...),
	}
	m.kvs.Ascend(func(kv *hivemindv1.KeyValue) bool {
		s.Kvs = append(s.Kvs, kv)
		return true
	})
	for _, in := range m.intents {
		s.Intents = append(s.Intents, in)
	}
	sort.Slice(s.Intents, func(i, j int) bool { return s.Intents[i].Key < s.Intents[j].Key })
	for _, k := range m.window() {
		s.Applied = append(s.Applied, &raftv1.Applied{IdempotencyKey: k, Result: m.applied[k]})
	}
	return s
}

// Restore replaces the state with a snapshot's. The machine keeps the
// snapshot's messages, so the caller must not modify them afterwards. A
// snapshot that contradicts itself is refused and the state left as it was.
func (m *Machine) Restore(s *raftv1.Snapshot) error {
	if err := checkSnapshot(s); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reset()
	m.rev, m.epoch, m.oldest, m.lastHLC = s.GetRevision(), s.GetEpoch(), s.GetOldestRevision(), s.GetLastHlc()
	if m.epoch == 0 {
		m.epoch = 1
	}
	if m.oldest == 0 {
		m.oldest = 1
	}
	for _, kv := range s.GetKvs() {
		m.kvs.ReplaceOrInsert(kv)
	}
	m.events = append([]*hivemindv1.Event(nil), s.GetEvents()...)
	for _, e := range m.events {
		m.historyBytes += eventBytes(e)
	}
	for _, in := range s.GetIntents() {
		m.intents[in.Key] = in
	}
	applied := s.GetApplied()
	// A snapshot from a machine with a larger window keeps only the newest
	// keys this machine's window holds.
	applied = applied[max(0, len(applied)-m.cfg.IdempotencyWindow):]
	for _, a := range applied {
		m.applied[a.GetIdempotencyKey()] = a.GetResult()
		m.order = append(m.order, a.GetIdempotencyKey())
	}
	return nil
}

// checkSnapshot refuses a snapshot whose parts disagree with each other, so
// a damaged one fails loudly instead of serving wrong answers.
func checkSnapshot(s *raftv1.Snapshot) error {
	rev, oldest := s.GetRevision(), max(s.GetOldestRevision(), 1)
	if rev < 0 || oldest > rev+1 {
		return fmt.Errorf("fsm: snapshot: revision %d, oldest retained %d", rev, s.GetOldestRevision())
	}
	prevKey := ""
	for i, kv := range s.GetKvs() {
		if kv.GetKey() <= prevKey && i > 0 || kv.GetKey() == "" {
			return fmt.Errorf("fsm: snapshot: key %d %q is empty or out of order", i, kv.GetKey())
		}
		if kv.GetModRevision() > rev || kv.GetCreateRevision() > kv.GetModRevision() {
			return fmt.Errorf("fsm: snapshot: key %q has revisions %d..%d, snapshot is at %d", kv.GetKey(), kv.GetCreateRevision(), kv.GetModRevision(), rev)
		}
		prevKey = kv.GetKey()
	}
	prevRev := oldest
	for i, e := range s.GetEvents() {
		if e.GetRevision() < prevRev || e.GetRevision() > rev {
			return fmt.Errorf("fsm: snapshot: event %d at revision %d is outside %d..%d or out of order", i, e.GetRevision(), prevRev, rev)
		}
		prevRev = e.GetRevision()
	}
	seen := map[string]bool{}
	for _, in := range s.GetIntents() {
		if in.GetKey() == "" || seen[in.GetKey()] {
			return fmt.Errorf("fsm: snapshot: intent %q is empty or repeated", in.GetKey())
		}
		seen[in.GetKey()] = true
	}
	clear(seen)
	for _, a := range s.GetApplied() {
		if a.GetIdempotencyKey() == "" || seen[a.GetIdempotencyKey()] || a.GetResult() == nil {
			return fmt.Errorf("fsm: snapshot: idempotency key %q is empty, repeated or has no result", a.GetIdempotencyKey())
		}
		seen[a.GetIdempotencyKey()] = true
	}
	return nil
}
