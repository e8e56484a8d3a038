package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

func appendEvent(payload int) *raftv1.Command {
	return &raftv1.Command{Proposer: "cp1", Source: "h1", Op: &raftv1.Command_AppendEvent{AppendEvent: &hivemindv1.AppendEventRequest{
		Type: "app.note", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/app/x", Payload: make([]byte, payload)}}}
}

// 400 appends of 1 MiB keep at most MaxHistoryBytes of events, however few
// revisions that is; the oldest are dropped whole and reading them says
// how far back the log goes.
func TestHistoryIsBoundedInBytes(t *testing.T) {
	const limit = 8 << 20
	m := New(Config{MaxHistoryBytes: limit})
	for range 400 {
		mustApply(t, m, appendEvent(1<<20))
	}
	if got := m.HistoryBytes(); got > limit || got < limit-(2<<20) {
		t.Fatalf("history is %d bytes, want at most %d and not far below", got, limit)
	}
	evs, err := m.EventsFrom(m.OldestRevision(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, e := range evs {
		sum += int64(proto.Size(e))
	}
	if sum != m.HistoryBytes() {
		t.Fatalf("retained events encode to %d bytes, HistoryBytes says %d", sum, m.HistoryBytes())
	}
	if evs[len(evs)-1].GetRevision() != 400 || int64(len(evs)) != 400-m.OldestRevision()+1 {
		t.Fatalf("retained %d events up to revision %d, oldest %d", len(evs), evs[len(evs)-1].GetRevision(), m.OldestRevision())
	}
	if _, err := m.EventsFrom(1, 1); !errors.Is(err, ErrCompacted) || !strings.Contains(err.Error(), fmt.Sprintf("oldest retained is %d", m.OldestRevision())) {
		t.Fatalf("reading dropped history: %v", err)
	}
	if m.Epoch() != 1 {
		t.Fatalf("epoch %d: retention must not move it", m.Epoch())
	}
}

// The latest revision is kept even when it alone is over the limit, and
// a revision's events are dropped together.
func TestHistoryKeepsTheLatestRevisionAndWholeRevisions(t *testing.T) {
	m := New(Config{MaxHistoryBytes: 4 << 10})
	for i := range 4 {
		mustApply(t, m, put(fmt.Sprintf("/app/k%d", i), strings.Repeat("v", 1500)))
	}
	// One revision with four kv.delete events, each carrying its 1.5 KB key.
	res, evs := mustApply(t, m, del("/app/", true))
	if len(evs) != 4 {
		t.Fatalf("prefix delete: %d events", len(evs))
	}
	if m.OldestRevision() != res.GetRevision() {
		t.Fatalf("oldest %d, want only the latest revision %d kept", m.OldestRevision(), res.GetRevision())
	}
	kept, err := m.EventsFrom(m.OldestRevision(), 0)
	if err != nil || len(kept) != 4 {
		t.Fatalf("kept %d events (%v), want the latest revision's 4", len(kept), err)
	}
	mustApply(t, m, put("/app/small", "s"))
	kept, _ = m.EventsFrom(m.OldestRevision(), 0)
	if len(kept) != 1 || m.HistoryBytes() > 4<<10 {
		t.Fatalf("after a small put: %d events, %d bytes; want the big revision dropped whole", len(kept), m.HistoryBytes())
	}
}

// Two machines that apply the same commands keep the same history, and a
// machine restored from a snapshot counts the same bytes and goes on
// dropping the same revisions.
func TestHistoryRetentionIsDeterministic(t *testing.T) {
	cfg := Config{MaxHistoryBytes: 256 << 10}
	a, b := New(cfg), New(cfg)
	var restored *Machine
	for i := range 300 {
		cmd := appendEvent(1000 + (i*7919)%9000)
		a.Apply(cmd)
		b.Apply(proto.Clone(cmd).(*raftv1.Command))
		if i == 150 {
			restored = New(cfg)
			if err := restored.Restore(a.Snapshot()); err != nil {
				t.Fatal(err)
			}
		}
		if i > 150 {
			restored.Apply(proto.Clone(cmd).(*raftv1.Command))
		}
	}
	for name, m := range map[string]*Machine{"b": b, "restored": restored} {
		if m.OldestRevision() != a.OldestRevision() || m.HistoryBytes() != a.HistoryBytes() {
			t.Errorf("%s: oldest %d, %d bytes; a: oldest %d, %d bytes", name, m.OldestRevision(), m.HistoryBytes(), a.OldestRevision(), a.HistoryBytes())
		}
	}
	if a.OldestRevision() == 1 {
		t.Fatal("nothing was dropped; the test does not reach the limit")
	}
}
