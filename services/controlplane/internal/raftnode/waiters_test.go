package raftnode

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// entry is a normal entry at index holding one proposal per id.
func entry(index uint64, ids ...uint64) *raftpb.Entry {
	var data []byte
	for _, id := range ids {
		data = appendFrame(data, id, []byte{'x'})
	}
	return &raftpb.Entry{Index: proto.Uint64(index), Type: raftpb.EntryNormal.Enum(), Data: data}
}

func results(res any, ids ...uint64) []result {
	var out []result
	for _, id := range ids {
		out = append(out, result{id, res})
	}
	return out
}

// The ways a waiting proposal ends, driven step by step.
func TestWaiterOutcomes(t *testing.T) {
	n := &Node{waiters: map[uint64]*waiter{}, placed: map[uint64][]uint64{}, reads: map[uint64]chan uint64{}}
	wait := func(id, term uint64) chan any {
		ch := make(chan any, 1)
		n.waiters[id] = &waiter{ch: ch, term: term}
		return ch
	}
	applied, batched := wait(1, 2), wait(7, 2)
	overwritten, survived := wait(2, 2), wait(8, 2)
	neverAppended, appendedThenTermMoved := wait(3, 2), wait(4, 2)
	n.placeWaiters([]*raftpb.Entry{entry(10, 1, 7), entry(11, 2, 8), entry(12, 4)})

	// A new term: the proposal raft never appended is gone; the appended
	// ones may still commit under the next leader, so they keep waiting.
	n.dropStaleWaiters(3)
	if got := <-neverAppended; !errors.Is(got.(error), ErrProposalDropped) {
		t.Fatalf("never appended: %v", got)
	}
	n.resolve(10, results("result", 1, 7))
	if got := <-applied; got != "result" {
		t.Fatalf("applied: %v", got)
	}
	if got := <-batched; got != "result" {
		t.Fatalf("applied in the same entry: %v", got)
	}
	// The next leader put another entry at 11 that holds 8 but not 2.
	n.resolve(11, results("kept", 99, 8))
	if got := <-overwritten; !errors.Is(got.(error), ErrProposalDropped) {
		t.Fatalf("overwritten: %v", got)
	}
	if got := <-survived; got != "kept" {
		t.Fatalf("in the entry that replaced its first one: %v", got)
	}
	n.resolve(12, results("late", 4)) // committed by the next leader after all
	if got := <-appendedThenTermMoved; got != "late" {
		t.Fatalf("appended before the term moved: %v", got)
	}
	if len(n.waiters) != 0 || len(n.placed) != 0 {
		t.Fatalf("left behind: %d waiters, %d placed", len(n.waiters), len(n.placed))
	}

	// A snapshot installed over a waiting entry: its fate is unknown here.
	skipped := wait(5, 3)
	n.placeWaiters([]*raftpb.Entry{entry(20, 5)})
	n.skipWaiters(25)
	if got := <-skipped; !errors.Is(got.(error), ErrProposalDropped) {
		t.Fatalf("under a snapshot: %v", got)
	}
	if len(n.placed) != 0 {
		t.Fatalf("places under the snapshot left behind: %v", n.placed)
	}
	stopped := wait(6, 3)
	n.fail(ErrStopped)
	if got := <-stopped; !errors.Is(got.(error), ErrStopped) {
		t.Fatalf("stopped: %v", got)
	}
}

func TestFrames(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 300) // a length of two uvarint bytes
	data := appendFrame(appendFrame(appendFrame(nil, 1, []byte("a")), 2, nil), 3, big)
	type frame struct {
		id   uint64
		data string
	}
	var got []frame
	if err := frames(data, func(id uint64, d []byte) { got = append(got, frame{id, string(d)}) }); err != nil {
		t.Fatal(err)
	}
	want := []frame{{1, "a"}, {2, ""}, {3, string(big)}}
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frame %d: got id %d (%d bytes), want id %d (%d bytes)", i, got[i].id, len(got[i].data), want[i].id, len(want[i].data))
		}
	}
	if err := frames(nil, func(uint64, []byte) { t.Fatal("a frame in an empty entry") }); err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{1, 8, 9, len(data) - 1} {
		if err := frames(data[:cut], func(uint64, []byte) {}); err == nil {
			t.Fatalf("data cut to %d of %d bytes decoded without an error", cut, len(data))
		}
	}
}

// takeBatch frames what fits in one entry (proposals whose callers gave up
// left out), sized exactly, and leaves the rest queued in order.
func TestTakeBatch(t *testing.T) {
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	third := maxBatchBytes / 3
	n := &Node{queue: []pending{
		{id: 1, data: []byte("a"), ctx: live},
		{id: 2, data: []byte("gave up"), ctx: gone},
		{id: 3, data: bytes.Repeat([]byte{3}, third), ctx: live},
		{id: 4, data: bytes.Repeat([]byte{4}, third), ctx: live},
		{id: 5, data: bytes.Repeat([]byte{5}, third), ctx: live}, // past maxBatchBytes
		{id: 6, data: []byte("f"), ctx: live},
	}}
	ids, data := n.takeBatch()
	if !slices.Equal(ids, []uint64{1, 3, 4}) {
		t.Fatalf("batch of %v, want [1 3 4]", ids)
	}
	if len(data) != cap(data) {
		t.Fatalf("batch data %d bytes in a buffer of %d: not sized exactly", len(data), cap(data))
	}
	var got []uint64
	if err := frames(data, func(id uint64, _ []byte) { got = append(got, id) }); err != nil || !slices.Equal(got, ids) {
		t.Fatalf("framed %v (%v), want %v", got, err, ids)
	}
	if len(n.queue) != 2 || n.queue[0].id != 5 || n.queue[1].id != 6 {
		t.Fatalf("left queued: %v, want 5 and 6", n.queue)
	}
	n.queue = nil
	for i := range maxBatchProposals + 1 {
		n.queue = append(n.queue, pending{id: uint64(i), ctx: live})
	}
	if ids, _ := n.takeBatch(); len(ids) != maxBatchProposals || len(n.queue) != 1 {
		t.Fatalf("took %d of %d small proposals, %d left; want %d taken", len(ids), maxBatchProposals+1, len(n.queue), maxBatchProposals)
	}
}
