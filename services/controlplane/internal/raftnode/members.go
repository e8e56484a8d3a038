package raftnode

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Members returns the members (voters and learners) with their addresses,
// as replicated through raft: every conf change carries the member it adds
// in its context, and snapshots carry the whole list.
func (n *Node) Members() []*hivemindv1.Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*hivemindv1.Member, 0, len(n.members))
	for _, m := range n.members {
		out = append(out, proto.Clone(m).(*hivemindv1.Member))
	}
	slices.SortFunc(out, func(a, b *hivemindv1.Member) int { return cmp.Compare(a.GetId(), b.GetId()) })
	return out
}

// HasMember reports whether id is a voter or learner called name, and
// whether this node knows any member at all.
func (n *Node) HasMember(id uint64, name string) (member, anyKnown bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.members[id]
	return ok && m.GetName() == name, len(n.members) > 0
}

func decodeConfChange(e *raftpb.Entry) (raftpb.ConfChangeI, error) {
	if e.GetType() == raftpb.EntryConfChange {
		cc := &raftpb.ConfChange{}
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			return nil, fmt.Errorf("raftnode: conf change at %d: %w", e.GetIndex(), err)
		}
		return cc, nil
	}
	cc := &raftpb.ConfChangeV2{}
	if err := proto.Unmarshal(e.GetData(), cc); err != nil {
		return nil, fmt.Errorf("raftnode: conf change at %d: %w", e.GetIndex(), err)
	}
	return cc, nil
}

// applyMembers records what an applied conf change did to the membership.
func (n *Node) applyMembers(cci raftpb.ConfChangeI, cs *raftpb.ConfState) {
	cc := cci.AsV2()
	var m *hivemindv1.Member
	if len(cc.GetContext()) > 0 {
		m = &hivemindv1.Member{}
		if err := proto.Unmarshal(cc.GetContext(), m); err != nil {
			m = nil
		}
	}
	n.mu.Lock()
	n.confState = cs
	// A new member that needs a snapshot must find itself in the snapshot's
	// ConfState, so take one that includes the change.
	n.snapshotNow = true
	for _, ch := range cc.GetChanges() {
		id := ch.GetNodeId()
		switch ch.GetType() {
		case raftpb.ConfChangeRemoveNode:
			delete(n.members, id)
			delete(n.lastHeard, id)
		default:
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
	members := make(map[uint64]*hivemindv1.Member, len(n.members))
	for id, m := range n.members {
		members[id] = m
	}
	n.mu.Unlock()

	for _, ch := range cc.GetChanges() {
		id := ch.GetNodeId()
		if id == n.cfg.ID {
			continue
		}
		if ch.GetType() == raftpb.ConfChangeRemoveNode {
			n.tr.RemovePeer(id)
		} else if m, ok := members[id]; ok && m.GetPeerAddress() != "" {
			n.tr.AddPeer(id, m.GetPeerAddress())
		}
	}
}

// AddLearner adds m as a learner and returns once the change is applied
// here. Only the leader can change the membership.
func (n *Node) AddLearner(ctx context.Context, m *hivemindv1.Member) error {
	m = proto.Clone(m).(*hivemindv1.Member)
	m.Learner = true
	return n.changeConf(ctx, raftpb.ConfChangeAddLearnerNode, m)
}

// PromoteLearner makes learner id a voter, provided it has caught up.
func (n *Node) PromoteLearner(ctx context.Context, id uint64) error {
	n.mu.Lock()
	m, ok := n.members[id]
	n.mu.Unlock()
	if !ok || !m.GetLearner() {
		return fmt.Errorf("raftnode: %x is not a learner", id)
	}
	if !n.caughtUp(id) {
		return fmt.Errorf("raftnode: learner %x has not caught up with the leader's log yet", id)
	}
	m = proto.Clone(m).(*hivemindv1.Member)
	m.Learner = false
	return n.changeConf(ctx, raftpb.ConfChangeAddNode, m)
}

// RemoveMember removes a voter or learner.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	n.mu.Lock()
	_, ok := n.members[id]
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("raftnode: no member %x", id)
	}
	return n.changeConf(ctx, raftpb.ConfChangeRemoveNode, &hivemindv1.Member{Id: id})
}

func (n *Node) changeConf(ctx context.Context, typ raftpb.ConfChangeType, m *hivemindv1.Member) error {
	if err := n.noQuorum(); err != nil {
		return err
	}
	if !n.IsLeader() {
		return &NotLeaderError{Leader: n.lead.Load()}
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	cc := &raftpb.ConfChangeV2{
		Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: proto.Uint64(m.GetId())}},
		Context: data,
	}
	n.confMu.Lock()
	defer n.confMu.Unlock()
	// raft also drops a change proposed before everything the leader had
	// in its log when it was elected (or when the last change was made) is
	// applied; wait for that first.
	last, _ := n.storage.Raft().LastIndex()
	if err := n.WaitApplied(ctx, last); err != nil {
		return err
	}
	term := n.Term()
	if err := n.rn.ProposeConfChange(ctx, cc); err != nil {
		if errors.Is(err, raft.ErrProposalDropped) {
			return ErrProposalDropped
		}
		return err
	}
	// Wait until the change shows in the applied membership.
	for {
		// Judged before looking, so a change applied in between is seen.
		lost := n.changeLost(term)
		n.mu.Lock()
		cur, present := n.members[m.GetId()]
		n.mu.Unlock()
		switch {
		case typ == raftpb.ConfChangeRemoveNode && !present,
			typ == raftpb.ConfChangeAddLearnerNode && present, // possibly promoted already
			typ == raftpb.ConfChangeAddNode && present && !cur.GetLearner():
			return nil
		}
		if err := n.noQuorum(); err != nil {
			return err
		}
		if lost {
			return ErrProposalDropped
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return ErrStopped
		case <-time.After(n.cfg.TickInterval):
		}
	}
}

// changeLost tells, for a change proposed in term and not (yet) seen
// applied, whether it can no longer be: an entry of a later term has been
// applied here. Every entry before that one is committed and applied too,
// so had the change survived the leader change it would show by now.
func (n *Node) changeLost(term uint64) bool {
	if n.Term() == term {
		return false
	}
	t, err := n.storage.Raft().Term(n.applied.Load())
	return err == nil && t > term
}

// caughtUp: the peer's log matches the leader's to within a few entries.
func (n *Node) caughtUp(id uint64) bool {
	st := n.rn.Status()
	pr, ok := st.Progress[id]
	if !ok {
		return false
	}
	last, _ := n.storage.Raft().LastIndex()
	// Match > 0: the learner has answered at least once. raft marks a new
	// member recently active before it has said anything, and with a short
	// log Match+64 >= last would otherwise hold for a member that is not
	// even running.
	return pr.RecentActive && pr.Match > 0 && pr.Match+64 >= last
}

// promoteLoop, on the leader, promotes learners once they have caught up.
func (n *Node) promoteLoop() {
	t := time.NewTicker(5 * n.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stopc:
			return
		case <-t.C:
		}
		if !n.IsLeader() {
			continue
		}
		for _, m := range n.Members() {
			if m.GetLearner() && n.caughtUp(m.GetId()) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*n.cfg.TickInterval*time.Duration(n.cfg.ElectionTicks))
				if err := n.PromoteLearner(ctx, m.GetId()); err == nil {
					n.log.Info("raft: promoted learner", "member", m.GetName())
				}
				cancel()
			}
		}
	}
}

// Snapshots carry the member list ahead of the state machine's bytes:
// [4-byte length][MemberListResponse][state machine snapshot].
func encodeSnapshot(members []*hivemindv1.Member, state []byte) ([]byte, error) {
	ml, err := proto.Marshal(&hivemindv1.MemberListResponse{Members: members})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4, 4+len(ml)+len(state))
	binary.BigEndian.PutUint32(out, uint32(len(ml)))
	out = append(out, ml...)
	return append(out, state...), nil
}

func (n *Node) restore(snap *raftpb.Snapshot) error {
	data := snap.GetData()
	if len(data) < 4 || int(binary.BigEndian.Uint32(data)) > len(data)-4 {
		return errors.New("raftnode: malformed snapshot")
	}
	ml := int(binary.BigEndian.Uint32(data))
	var list hivemindv1.MemberListResponse
	if err := proto.Unmarshal(data[4:4+ml], &list); err != nil {
		return fmt.Errorf("raftnode: snapshot members: %w", err)
	}
	if err := n.sm.Restore(data[4+ml:]); err != nil {
		return fmt.Errorf("raftnode: restore state machine: %w", err)
	}
	n.skipWaiters(snap.GetMetadata().GetIndex())
	n.mu.Lock()
	n.members = map[uint64]*hivemindv1.Member{}
	for _, m := range list.GetMembers() {
		n.members[m.GetId()] = m
	}
	n.confState = snap.GetMetadata().GetConfState()
	n.snapIndex = snap.GetMetadata().GetIndex()
	n.mu.Unlock()
	n.sinceSnap = 0
	if n.tr != nil {
		for _, m := range list.GetMembers() {
			if m.GetId() != n.cfg.ID {
				n.tr.AddPeer(m.GetId(), m.GetPeerAddress())
			}
		}
	}
	n.applied.Store(snap.GetMetadata().GetIndex())
	n.wakeApplied()
	return nil
}

// snapshotDone is a snapshot written in the background, ready to be
// recorded by the Ready loop.
type snapshotDone struct {
	snap *raftpb.Snapshot
	err  error
}

// maybeSnapshot starts a snapshot every SnapshotEvery applied entries, or
// SnapshotEveryBytes of applied entry data, whichever comes first. The
// state is captured here, in log order; serialising and writing it happen
// on another goroutine so that the Ready loop keeps committing meanwhile.
func (n *Node) maybeSnapshot() error {
	applied := n.applied.Load()
	n.mu.Lock()
	due := !n.snapping && (applied-n.snapIndex >= n.cfg.SnapshotEvery || n.sinceSnap >= n.cfg.SnapshotEveryBytes || n.snapshotNow)
	if due {
		n.snapshotNow = false
		n.snapping = true
		n.sinceSnap = 0
	}
	cs := proto.Clone(n.confState).(*raftpb.ConfState)
	n.mu.Unlock()
	if !due {
		return nil
	}
	term, err := n.storage.Raft().Term(applied)
	if err != nil {
		n.mu.Lock()
		n.snapping = false
		n.mu.Unlock()
		if errors.Is(err, raft.ErrCompacted) {
			return nil
		}
		return err
	}
	capture, err := n.sm.Snapshot()
	if err != nil {
		return err
	}
	members := n.Members()
	n.snapWriters.Add(1)
	go func() {
		defer n.snapWriters.Done()
		state, err := capture()
		var data []byte
		if err == nil {
			data, err = encodeSnapshot(members, state)
		}
		snap := &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(applied), Term: proto.Uint64(term), ConfState: cs}}
		if err == nil {
			err = n.storage.writeSnapshot(snap)
		}
		n.snapDone <- snapshotDone{snap: snap, err: err}
	}()
	return nil
}

// marginByBytes returns the lowest index in [from, idx] such that the
// entries after it up to idx hold at most SnapshotMarginBytes of data, so
// that compacting to it keeps that much at most behind the snapshot.
func (n *Node) marginByBytes(from, idx uint64) uint64 {
	first, err := n.storage.Raft().FirstIndex()
	if err != nil {
		return from
	}
	from = max(from, first)
	if from > idx {
		return from
	}
	ents, err := n.storage.Raft().Entries(from, idx+1, math.MaxUint64)
	if err != nil {
		return from
	}
	var kept uint64
	for i := len(ents) - 1; i >= 0; i-- {
		kept += uint64(len(ents[i].GetData()))
		if kept > n.cfg.SnapshotMarginBytes {
			return ents[i].GetIndex()
		}
	}
	return from
}

// finishSnapshot records a snapshot written in the background and
// compacts the log behind it, keeping SnapshotMargin entries.
func (n *Node) finishSnapshot(d snapshotDone) error {
	n.mu.Lock()
	n.snapping = false
	n.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	idx := d.snap.GetMetadata().GetIndex()
	if _, err := n.storage.Raft().CreateSnapshot(idx, d.snap.GetMetadata().GetConfState(), d.snap.GetData()); err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return nil // a newer snapshot arrived from the leader meanwhile
		}
		return err
	}
	compactTo := uint64(1)
	if idx > n.cfg.SnapshotMargin {
		compactTo = idx - n.cfg.SnapshotMargin
	}
	compactTo = max(compactTo, n.marginByBytes(compactTo, idx))
	if err := n.storage.Compacted(compactTo); err != nil {
		return err
	}
	n.mu.Lock()
	n.snapIndex = idx
	n.mu.Unlock()
	n.log.Debug("raft: snapshot", "index", idx, "compacted_to", compactTo)
	return nil
}
