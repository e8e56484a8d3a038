package raftnode

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A membership change proposed in one term and not seen applied is lost
// once an entry of a later term is applied here (every entry before it is
// then applied), and not before.
func TestChangeLostOnlyOnceALaterTermIsApplied(t *testing.T) {
	s, err := openStorage(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	entry := func(index, term uint64) *raftpb.Entry {
		return &raftpb.Entry{Index: proto.Uint64(index), Term: proto.Uint64(term), Type: raftpb.EntryNormal.Enum()}
	}
	// Term 2 wrote 1-3 (the change went out at 3 and may have been
	// overwritten); term 3's leader wrote 4 and 5.
	if err := s.Save(&raftpb.HardState{Term: proto.Uint64(3), Commit: proto.Uint64(5)},
		[]*raftpb.Entry{entry(1, 2), entry(2, 2), entry(3, 2), entry(4, 3), entry(5, 3)}, nil, true); err != nil {
		t.Fatal(err)
	}
	n := &Node{storage: s}
	for _, c := range []struct {
		term, applied uint64
		want          bool
	}{
		{term: 2, applied: 5, want: false}, // leadership has not moved: keep waiting
		{term: 3, applied: 3, want: false}, // moved, but nothing of term 3 applied yet
		{term: 3, applied: 4, want: true},
		{term: 4, applied: 5, want: true}, // moved twice
	} {
		n.term.Store(c.term)
		n.applied.Store(c.applied)
		if got := n.changeLost(2); got != c.want {
			t.Errorf("term %d, applied %d: changeLost(2) = %v, want %v", c.term, c.applied, got, c.want)
		}
	}
}
