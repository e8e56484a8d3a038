package raftnode

import (
	"encoding/binary"
	"errors"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func proposal(index, id uint64) *raftpb.Entry {
	data := binary.BigEndian.AppendUint64(nil, id)
	return &raftpb.Entry{Index: proto.Uint64(index), Type: raftpb.EntryNormal.Enum(), Data: append(data, 'x')}
}

// The three ways a waiting proposal ends, driven step by step.
func TestWaiterOutcomes(t *testing.T) {
	n := &Node{waiters: map[uint64]*waiter{}, placed: map[uint64]uint64{}, reads: map[uint64]chan uint64{}}
	wait := func(id, term uint64) chan any {
		ch := make(chan any, 1)
		n.waiters[id] = &waiter{ch: ch, term: term}
		return ch
	}
	applied, overwritten, neverAppended, appendedThenTermMoved := wait(1, 2), wait(2, 2), wait(3, 2), wait(4, 2)
	n.placeWaiters([]*raftpb.Entry{proposal(10, 1), proposal(11, 2), proposal(12, 4)})

	// A new term: the proposal raft never appended is gone; the appended
	// ones may still commit under the next leader, so they keep waiting.
	n.dropStaleWaiters(3)
	if got := <-neverAppended; !errors.Is(got.(error), ErrProposalDropped) {
		t.Fatalf("never appended: %v", got)
	}
	n.resolve(10, 1, "result")
	if got := <-applied; got != "result" {
		t.Fatalf("applied: %v", got)
	}
	n.resolve(11, 99, nil) // the next leader put another entry at 11
	if got := <-overwritten; !errors.Is(got.(error), ErrProposalDropped) {
		t.Fatalf("overwritten: %v", got)
	}
	n.resolve(12, 4, "late") // committed by the next leader after all
	if got := <-appendedThenTermMoved; got != "late" {
		t.Fatalf("appended before the term moved: %v", got)
	}
	if len(n.waiters) != 0 || len(n.placed) != 0 {
		t.Fatalf("left behind: %d waiters, %d placed", len(n.waiters), len(n.placed))
	}

	// A snapshot installed over a waiting entry: its fate is unknown here.
	skipped := wait(5, 3)
	n.placeWaiters([]*raftpb.Entry{proposal(20, 5)})
	n.skipWaiters(25)
	if got := <-skipped; !errors.Is(got.(error), ErrProposalDropped) {
		t.Fatalf("under a snapshot: %v", got)
	}
	stopped := wait(6, 3)
	n.fail(ErrStopped)
	if got := <-stopped; !errors.Is(got.(error), ErrStopped) {
		t.Fatalf("stopped: %v", got)
	}
}
