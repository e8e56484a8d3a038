package raftnode

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
)

// quorumWindow is how recently the leader must have heard from a majority
// to consider itself able to commit. Heartbeats go out every tick, so a
// healthy peer is heard from several times within it.
func (n *Node) quorumWindow() time.Duration {
	return time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval / 2
}

// Degraded reports whether this node can serve writes and linearizable
// reads right now, and if not, why.
func (n *Node) Degraded() (bool, string) {
	if n.stopped.Load() {
		return true, "node is stopping"
	}
	lead := n.lead.Load()
	if lead == raft.None {
		return true, "no leader elected (a majority of voters is unreachable, or an election is under way)"
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if lead != n.cfg.ID {
		// A follower cut off from its leader keeps believing in it until its
		// election timeout runs out; the leader's silence (it heartbeats
		// every tick) says so sooner.
		if heard, ok := n.lastHeard[lead]; ok && time.Since(heard) > n.quorumWindow() {
			return true, fmt.Sprintf("no word from the leader %x for %v", lead, time.Since(heard).Round(time.Millisecond))
		}
		return false, ""
	}
	voters := n.confState.GetVoters()
	heard := 0
	cutoff := time.Now().Add(-n.quorumWindow())
	for _, id := range voters {
		if id == n.cfg.ID || n.lastHeard[id].After(cutoff) {
			heard++
		}
	}
	if len(voters) > 0 && heard <= len(voters)/2 {
		return true, fmt.Sprintf("the leader hears from %d of %d voters", heard, len(voters))
	}
	return false, ""
}

// checkQuorum runs on every tick and leader change: it refreshes the
// quorum state Propose reads, and once the quorum is gone fails the
// proposals waiting here, so that a write caught by a partition fails fast
// instead of waiting for its deadline.
func (n *Node) checkQuorum() {
	bad, why := n.Degraded()
	if !bad {
		n.quorumErr.Store(nil)
		return
	}
	err := fmt.Errorf("%w: %s", ErrNoQuorum, why)
	n.quorumErr.Store(&err)
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.waiters {
		n.deliver(id, err)
	}
}

func (n *Node) noQuorum() error {
	if bad, why := n.Degraded(); bad {
		return fmt.Errorf("%w: %s", ErrNoQuorum, why)
	}
	return nil
}

// Propose replicates data and returns what the state machine's Apply
// returned for it, once applied on this node. Only the leader proposes; a
// follower gets a *NotLeaderError. Without a quorum it fails fast with
// ErrNoQuorum instead of waiting for ctx. Concurrent proposals may share a
// log entry (see batch.go); data must not be changed after the call.
// decoded, if not nil, is handed to this node's state machine along with
// data when the entry is applied (see StateMachine.Apply); it must be what
// data decodes to and must not be changed either.
func (n *Node) Propose(ctx context.Context, data []byte, decoded any) (any, error) {
	if n.stopped.Load() {
		return nil, ErrStopped
	}
	// A leader that had a quorum at the last check skips checking again:
	// if the quorum was lost since, the next check fails this proposal.
	// Anyone else checks now (a leader just elected must not be refused on
	// its state as a follower).
	if lead := n.lead.Load(); lead != n.cfg.ID || n.quorumErr.Load() != nil {
		if err := n.noQuorum(); err != nil {
			return nil, err
		}
		if lead != n.cfg.ID {
			return nil, &NotLeaderError{Leader: lead}
		}
	}
	id := n.nextID.Add(1)
	w := &waiter{ch: make(chan any, 1), term: n.term.Load(), decoded: decoded}
	n.mu.Lock()
	n.waiters[id] = w
	n.mu.Unlock()
	n.enqueue(pending{id: id, data: data, ctx: ctx})
	res, err := n.await(ctx, w.ch)
	if err != nil {
		n.forget(id)
		return nil, err
	}
	if err, ok := res.(error); ok {
		return nil, err
	}
	return res, nil
}

// await waits for a result; checkQuorum fails it if the quorum is lost
// meanwhile.
func (n *Node) await(ctx context.Context, ch <-chan any) (any, error) {
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.done:
		return nil, ErrStopped
	}
}

// ReadIndex returns once this node has applied everything that was
// committed when it was called, so a local read after it is linearizable.
// It works on followers too (raft asks the leader).
func (n *Node) ReadIndex(ctx context.Context) error {
	if n.stopped.Load() {
		return ErrStopped
	}
	if err := n.noQuorum(); err != nil {
		return err
	}
	id := n.nextID.Add(1)
	rctx := make([]byte, 8)
	binary.BigEndian.PutUint64(rctx, id)
	ch := make(chan uint64, 1)
	n.mu.Lock()
	n.reads[id] = ch
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.reads, id)
		n.mu.Unlock()
	}()
	if err := n.rn.ReadIndex(ctx, rctx); err != nil {
		return err
	}
	// A read index request lost with a leader that went away is never
	// answered; give up after an election timeout and let the caller retry.
	limit := time.NewTimer(2 * time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
	defer limit.Stop()
	check := time.NewTicker(max(n.cfg.TickInterval, 20*time.Millisecond))
	defer check.Stop()
	for {
		select {
		case idx, ok := <-ch:
			if !ok {
				return ErrStopped
			}
			return n.WaitApplied(ctx, idx)
		case <-ctx.Done():
			return ctx.Err()
		case <-limit.C:
			return fmt.Errorf("%w: no answer to a read index request", ErrTimeout)
		case <-check.C:
			if err := n.noQuorum(); err != nil {
				return err
			}
		}
	}
}

func (n *Node) readDone(rs raft.ReadState) {
	if len(rs.RequestCtx) != 8 {
		return
	}
	id := binary.BigEndian.Uint64(rs.RequestCtx)
	n.mu.Lock()
	ch, ok := n.reads[id]
	delete(n.reads, id)
	n.mu.Unlock()
	if ok {
		ch <- rs.Index
	}
}

// Status is a node's view of the cluster.
type Status struct {
	ID       uint64
	Lead     uint64
	Term     uint64
	Applied  uint64
	Commit   uint64
	Voters   []uint64
	Learners []uint64
	Degraded bool
	Reason   string
	// Progress of each member's log replication; only the leader has it.
	Progress map[uint64]PeerProgress
}

// PeerProgress is how far the leader has replicated its log to one member.
type PeerProgress struct {
	Match, Next uint64
	// State is raft's view: "StateProbe", "StateReplicate" or "StateSnapshot".
	State string
	// RecentActive: heard from within the last election timeout.
	RecentActive bool
	Learner      bool
}

// Status reports this node's view.
func (n *Node) Status() Status {
	st := n.rn.Status()
	bad, why := n.Degraded()
	s := Status{ID: n.cfg.ID, Lead: st.Lead, Term: st.GetTerm(), Applied: n.applied.Load(), Commit: st.GetCommit(), Degraded: bad, Reason: why}
	n.mu.Lock()
	s.Voters = slices.Clone(n.confState.GetVoters())
	s.Learners = slices.Clone(n.confState.GetLearners())
	n.mu.Unlock()
	slices.Sort(s.Voters)
	slices.Sort(s.Learners)
	if len(st.Progress) > 0 {
		s.Progress = map[uint64]PeerProgress{}
		for id, pr := range st.Progress {
			s.Progress[id] = PeerProgress{Match: pr.Match, Next: pr.Next, State: pr.State.String(), RecentActive: pr.RecentActive, Learner: pr.IsLearner}
		}
	}
	return s
}
