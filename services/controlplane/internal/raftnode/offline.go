package raftnode

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/atomicfile"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Offline work on a member's data directory, with no raft running: a new
// cluster's first state (restore and recovery) and the replay of a
// member's log (recovery).

// Bootstrap prepares dir, which must not hold a raft log yet, for a member
// of a new cluster whose members are voters from the start and whose state
// machine starts from state: the log begins with a snapshot at index 1,
// term 1, committed, and the cluster id file holds clusterID. Every member
// of the new cluster is bootstrapped with the same arguments, so their logs
// agree.
func Bootstrap(dir string, clusterID uint64, members []*hivemindv1.Member, state []byte) error {
	if clusterID == 0 {
		return errors.New("raftnode: bootstrap: cluster id 0")
	}
	if len(members) == 0 {
		return errors.New("raftnode: bootstrap: no members")
	}
	voters := make([]uint64, 0, len(members))
	for _, m := range members {
		if m.GetId() == 0 {
			return fmt.Errorf("raftnode: bootstrap: member %q has id 0", m.GetName())
		}
		voters = append(voters, m.GetId())
	}
	st, err := OpenStorage(dir)
	if err != nil {
		return err
	}
	if !st.Fresh() {
		st.Close()
		return fmt.Errorf("raftnode: bootstrap: %s already holds a raft log", dir)
	}
	data, err := encodeSnapshot(members, state)
	if err != nil {
		st.Close()
		return err
	}
	snap := &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{
		Index: proto.Uint64(1), Term: proto.Uint64(1), ConfState: &raftpb.ConfState{Voters: voters},
	}}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(1)}
	if err := st.Save(hs, nil, snap, true); err != nil {
		st.Close()
		return fmt.Errorf("raftnode: bootstrap: %w", err)
	}
	if err := st.Close(); err != nil {
		return err
	}
	n := &Node{cfg: Config{DataDir: dir}}
	return atomicfile.Write(n.clusterIDPath(), []byte(strconv.FormatUint(clusterID, 16)+"\n"), 0o600)
}

// Replayed is what Replay read from a member's data directory.
type Replayed struct {
	// Members as of the last entry of the log, conf changes applied.
	Members []*hivemindv1.Member
	// ClusterID of the member (0 when it had none yet).
	ClusterID uint64
	// Committed is the commit index the member had recorded; Last the
	// index of the last entry in its log.
	Committed, Last uint64
}

// Replay reads the raft state in dir without starting raft: sm gets the
// latest snapshot, then every entry of the log after it, in order —
// committed or not as far as this member knows. An entry past the recorded
// commit index may have been committed by a leader that has not said so
// yet (and acknowledged to a client), and raft would commit it had this
// member become the leader, so recovery keeps it rather than risk losing
// an acknowledged write.
func Replay(dir string, sm StateMachine) (*Replayed, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("raftnode: replay: %w", err)
	}
	st, err := OpenStorage(dir)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if st.Fresh() {
		return nil, fmt.Errorf("raftnode: replay: %s holds no raft state", dir)
	}
	n := &Node{cfg: Config{DataDir: dir}, sm: sm, members: map[uint64]*hivemindv1.Member{}, appliedWake: make(chan struct{})}
	if err := n.loadClusterID(); err != nil {
		return nil, err
	}
	snap, err := st.Raft().Snapshot()
	if err != nil {
		return nil, err
	}
	if !raft.IsEmptySnap(snap) {
		if err := n.restore(snap); err != nil {
			return nil, err
		}
	}
	first, _ := st.Raft().FirstIndex()
	last, _ := st.Raft().LastIndex()
	hs, _, _ := st.Raft().InitialState()
	if last >= first {
		ents, err := st.Raft().Entries(first, last+1, math.MaxUint64)
		if err != nil {
			return nil, fmt.Errorf("raftnode: replay: %w", err)
		}
		for _, e := range ents {
			if err := n.replayEntry(e); err != nil {
				return nil, err
			}
		}
	}
	return &Replayed{Members: n.Members(), ClusterID: n.ClusterID(), Committed: hs.GetCommit(), Last: last}, nil
}

// replayEntry applies e as the Ready loop would, without waiters or a
// transport.
func (n *Node) replayEntry(e *raftpb.Entry) error {
	switch e.GetType() {
	case raftpb.EntryNormal:
		if err := frames(e.GetData(), func(uint64, []byte) {}); err != nil {
			return fmt.Errorf("raftnode: replay: entry %d: %w", e.GetIndex(), err)
		}
		_ = frames(e.GetData(), func(_ uint64, data []byte) { n.sm.Apply(e.GetIndex(), data, nil) })
	case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
		cci, err := decodeConfChange(e)
		if err != nil {
			return err
		}
		cc := cci.AsV2()
		var m *hivemindv1.Member
		if len(cc.GetContext()) > 0 {
			m = &hivemindv1.Member{}
			if proto.Unmarshal(cc.GetContext(), m) != nil {
				m = nil
			}
		}
		for _, ch := range cc.GetChanges() {
			id := ch.GetNodeId()
			if ch.GetType() == raftpb.ConfChangeRemoveNode {
				delete(n.members, id)
				continue
			}
			cur := n.members[id]
			if m != nil && m.GetId() == id {
				cur = proto.Clone(m).(*hivemindv1.Member)
			}
			if cur == nil {
				cur = &hivemindv1.Member{Id: id}
			}
			cur.Learner = ch.GetType() == raftpb.ConfChangeAddLearnerNode
			n.members[id] = cur
		}
	}
	n.applied.Store(e.GetIndex())
	return nil
}
