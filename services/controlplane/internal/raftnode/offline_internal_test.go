package raftnode

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Replay applies the snapshot and then every entry of the log, those past
// the recorded commit index included, and follows conf changes.
func TestReplayKeepsTheWholeLog(t *testing.T) {
	dir := t.TempDir()
	members := []*hivemindv1.Member{{Id: 1, Name: "a", PeerAddress: "127.0.0.1:1"}, {Id: 2, Name: "b", PeerAddress: "127.0.0.1:2"}}
	state, _ := json.Marshal([]string{"from-snapshot"})
	if err := Bootstrap(dir, 0xc1, members, state); err != nil {
		t.Fatal(err)
	}
	if err := Bootstrap(dir, 0xc1, members, state); err == nil || !strings.Contains(err.Error(), "already holds a raft log") {
		t.Fatalf("second bootstrap of the same directory: %v", err)
	}
	st, err := OpenStorage(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, _ := proto.Marshal(&hivemindv1.Member{Id: 3, Name: "c", PeerAddress: "127.0.0.1:3"})
	cc, _ := proto.Marshal(&raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddLearnerNode.Enum(), NodeId: proto.Uint64(3)}}, Context: ctx})
	rm, _ := proto.Marshal(&raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(2)}}})
	ents := []*raftpb.Entry{
		{Index: proto.Uint64(2), Term: proto.Uint64(2), Data: appendFrame(appendFrame(nil, 7, []byte("w1")), 8, []byte("w2"))},
		{Index: proto.Uint64(3), Term: proto.Uint64(2), Type: raftpb.EntryConfChangeV2.Enum(), Data: cc},
		{Index: proto.Uint64(4), Term: proto.Uint64(2), Type: raftpb.EntryConfChangeV2.Enum(), Data: rm},
		{Index: proto.Uint64(5), Term: proto.Uint64(2), Data: appendFrame(nil, 9, []byte("w3"))},
	}
	// Committed up to 2 as far as this member knows.
	if err := st.Save(&raftpb.HardState{Term: proto.Uint64(2), Commit: proto.Uint64(2)}, ents, nil, true); err != nil {
		t.Fatal(err)
	}
	st.Close()

	sm := &listSM{}
	rp, err := Replay(dir, sm)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"from-snapshot", "w1", "w2", "w3"}; !slices.Equal(sm.items, want) {
		t.Errorf("replayed %v, want %v", sm.items, want)
	}
	if rp.ClusterID != 0xc1 || rp.Committed != 2 || rp.Last != 5 {
		t.Errorf("replayed %+v; want cluster c1, committed 2, last 5", rp)
	}
	var names []string
	for _, m := range rp.Members {
		names = append(names, m.GetName())
	}
	if !slices.Equal(names, []string{"a", "c"}) || !rp.Members[1].GetLearner() {
		t.Errorf("members %v (%v); want a and the learner c", names, rp.Members)
	}
	if _, err := Replay(filepath.Join(dir, "missing"), sm); err == nil {
		t.Error("replay of a missing directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "cluster-id")); err != nil {
		t.Error(err)
	}
}
