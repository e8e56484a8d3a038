package fsm

import (
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

// Restore replaces the state with a snapshot's.
func (m *Machine) Restore(s *raftv1.Snapshot) error {
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
	for _, in := range s.GetIntents() {
		m.intents[in.Key] = in
	}
	for _, a := range s.GetApplied() {
		m.applied[a.GetIdempotencyKey()] = a.GetResult()
		m.order = append(m.order, a.GetIdempotencyKey())
	}
	return nil
}
