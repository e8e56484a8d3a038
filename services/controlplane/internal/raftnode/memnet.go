package raftnode

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// MemNetwork connects nodes inside one process and injects faults:
// partitions, dropped messages and delay. Tests use it where they need to
// cut links deterministically; real gRPC is used elsewhere.
type MemNetwork struct {
	mu      sync.Mutex
	nodes   map[uint64]*Node
	blocked map[[2]uint64]bool
	drop    float64
	delay   time.Duration
}

// NewMemNetwork returns an empty network with no faults.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: map[uint64]*Node{}, blocked: map[[2]uint64]bool{}}
}

// Attach makes n reachable as id (call it again after a restart).
func (nw *MemNetwork) Attach(id uint64, n *Node) {
	nw.mu.Lock()
	nw.nodes[id] = n
	nw.mu.Unlock()
}

// Detach makes id unreachable (a stopped node).
func (nw *MemNetwork) Detach(id uint64) {
	nw.mu.Lock()
	delete(nw.nodes, id)
	nw.mu.Unlock()
}

// Partition cuts every link between nodes of different groups.
func (nw *MemNetwork) Partition(groups ...[]uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for i, g := range groups {
		for j, h := range groups {
			if i == j {
				continue
			}
			for _, a := range g {
				for _, b := range h {
					nw.blocked[[2]uint64{a, b}] = true
				}
			}
		}
	}
}

// Cut drops all traffic between a and b, both ways.
func (nw *MemNetwork) Cut(a, b uint64) {
	nw.mu.Lock()
	nw.blocked[[2]uint64{a, b}] = true
	nw.blocked[[2]uint64{b, a}] = true
	nw.mu.Unlock()
}

// Heal removes partitions, drops and delay.
func (nw *MemNetwork) Heal() {
	nw.mu.Lock()
	nw.blocked = map[[2]uint64]bool{}
	nw.drop, nw.delay = 0, 0
	nw.mu.Unlock()
}

// SetDrop drops the given fraction of messages; SetDelay delays each one.
func (nw *MemNetwork) SetDrop(fraction float64) { nw.mu.Lock(); nw.drop = fraction; nw.mu.Unlock() }

// SetDelay delays every message by d.
func (nw *MemNetwork) SetDelay(d time.Duration) { nw.mu.Lock(); nw.delay = d; nw.mu.Unlock() }

// Transport returns the transport factory for node id.
func (nw *MemNetwork) Transport(id uint64) func(Reporter) Transport {
	return func(r Reporter) Transport {
		return &memTransport{nw: nw, from: id, report: r, queues: map[uint64]memLink{}, stop: make(chan struct{})}
	}
}

// route decides the fate of a message from→to.
func (nw *MemNetwork) route(from, to uint64) (*Node, time.Duration, bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	n, ok := nw.nodes[to]
	if !ok || nw.blocked[[2]uint64{from, to}] || (nw.drop > 0 && rand.Float64() < nw.drop) {
		return nil, 0, false
	}
	return n, nw.delay, true
}

type memTransport struct {
	nw     *MemNetwork
	from   uint64
	report Reporter

	mu     sync.Mutex
	queues map[uint64]memLink
	stop   chan struct{}
	wg     sync.WaitGroup
	closed bool
}

// memLink is the queue towards one peer; closing gone ends its sender.
type memLink struct {
	q    chan *raftpb.Message
	gone chan struct{}
}

func (t *memTransport) AddPeer(id uint64, _ string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.queues[id]; ok || t.closed {
		return
	}
	q := make(chan *raftpb.Message, queueLen)
	gone := make(chan struct{})
	t.queues[id] = memLink{q: q, gone: gone}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			select {
			case <-t.stop:
				return
			case <-gone:
				return
			case m := <-q:
				n, delay, ok := t.nw.route(t.from, id)
				if !ok {
					t.report.ReportUnreachable(id)
					if m.GetType() == raftpb.MsgSnap {
						t.report.ReportSnapshot(id, raft.SnapshotFailure)
					}
					continue
				}
				if delay > 0 {
					time.Sleep(delay) // models link latency; keeps per-link order
				}
				_ = n.Step(context.Background(), m)
				if m.GetType() == raftpb.MsgSnap {
					t.report.ReportSnapshot(id, raft.SnapshotFinish)
				}
			}
		}
	}()
}

func (t *memTransport) RemovePeer(id uint64) {
	t.mu.Lock()
	if l, ok := t.queues[id]; ok {
		close(l.gone)
		delete(t.queues, id)
	}
	t.mu.Unlock()
}

func (t *memTransport) Send(msgs []*raftpb.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		if l, ok := t.queues[m.GetTo()]; ok {
			select {
			case l.q <- m:
			default:
				t.report.ReportUnreachable(m.GetTo())
				if m.GetType() == raftpb.MsgSnap {
					t.report.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
				}
			}
		}
	}
}

func (t *memTransport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	close(t.stop)
	t.mu.Unlock()
	t.wg.Wait()
}
