package raftnode

import (
	"go.etcd.io/raft/v3/raftpb"
)

// A proposal's waiter learns its outcome in one of three ways:
//
//   - its entry is applied: it gets the state machine's result;
//   - another entry is applied at the index its entry was appended at (a new
//     leader overwrote it): ErrProposalDropped;
//   - the term moves on before its entry was ever appended here (raft
//     dropped it with the old leadership): ErrProposalDropped.
//
// A proposal whose entry was appended is not failed on a mere term change:
// the next leader may well commit it, and failing it then would tell the
// caller "dropped" about a write that happened.
type waiter struct {
	ch      chan any
	term    uint64 // term when proposed
	index   uint64 // log index once seen in a Ready; 0 before
	decoded any    // what the proposer passed along with its data
}

// decodedProposals returns what the proposers on this node passed along
// with the proposals of an entry, by proposal id (nil on followers).
func (n *Node) decodedProposals(data []byte) map[uint64]any {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.waiters) == 0 {
		return nil
	}
	var out map[uint64]any
	_ = frames(data, func(id uint64, _ []byte) {
		if w, ok := n.waiters[id]; ok && w.decoded != nil {
			if out == nil {
				out = map[uint64]any{}
			}
			out[id] = w.decoded
		}
	})
	return out
}

// placeWaiters records at which index this node appended each waiting
// proposal.
func (n *Node) placeWaiters(ents []*raftpb.Entry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.waiters) == 0 {
		return
	}
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal {
			continue
		}
		index := e.GetIndex()
		// An undecodable entry places nobody; applying it stops the node.
		_ = frames(e.GetData(), func(id uint64, _ []byte) {
			if w, ok := n.waiters[id]; ok && w.index == 0 {
				w.index = index
				n.placed[index] = append(n.placed[index], id)
			}
		})
	}
}

// result is the outcome of one proposal of an applied entry.
type result struct {
	id  uint64
	res any
}

// resolve hands the results of the entry applied at index to their
// waiters, and fails the waiters whose proposals were once appended at
// that index but are not in the entry applied there (a new leader
// overwrote them).
func (n *Node) resolve(index uint64, results []result) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range results {
		n.deliver(r.id, r.res)
	}
	for _, id := range n.placed[index] {
		n.deliver(id, ErrProposalDropped) // no-op for those just delivered
	}
	delete(n.placed, index)
}

// deliver must be called with n.mu held. The waiter's place, if any, is
// cleared with its index.
func (n *Node) deliver(id uint64, res any) {
	if w, ok := n.waiters[id]; ok {
		delete(n.waiters, id)
		w.ch <- res
	}
}

// forget removes a waiter whose caller gave up.
func (n *Node) forget(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.waiters, id)
}

// dropStaleWaiters fails proposals made in an older term that never made
// it into this node's log: raft dropped them with the leadership.
func (n *Node) dropStaleWaiters(term uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, w := range n.waiters {
		if w.index == 0 && w.term < term {
			n.deliver(id, ErrProposalDropped)
		}
	}
}

// skipWaiters fails the waiters whose entries lie at or below a snapshot
// this node installed: it never applies them itself, so it cannot tell
// whether they were committed. The caller retries with its idempotency key.
func (n *Node) skipWaiters(index uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, w := range n.waiters {
		if w.index != 0 && w.index <= index {
			n.deliver(id, ErrProposalDropped)
		}
	}
	for i := range n.placed {
		if i <= index {
			delete(n.placed, i)
		}
	}
}

// fail wakes every waiter with err.
func (n *Node) fail(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.waiters {
		n.deliver(id, err)
	}
	clear(n.placed)
	for id, ch := range n.reads {
		close(ch)
		delete(n.reads, id)
	}
}
