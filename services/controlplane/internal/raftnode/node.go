// Package raftnode runs one control-plane raft member around a pure state
// machine: it owns the disk (Storage: a write-ahead log fsync'd per Ready,
// and snapshot files; see docs/storage.md), the network
// (Transport: gRPC streams, or an in-memory network with faults for tests)
// and the Ready loop of go.etcd.io/raft/v3. The state machine only ever sees
// committed entries, in order.
package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// StateMachine is what the node drives with committed entries.
type StateMachine interface {
	// Apply applies one committed proposal's data at index and returns the
	// result handed back to the proposer. decoded is what the proposer
	// passed to Propose along with data when the proposal was made on this
	// node and its caller still waits (the state machine may use it instead
	// of decoding data); nil otherwise.
	Apply(index uint64, data []byte, decoded any) any
	// Snapshot captures the state as of the last applied entry and returns
	// a function that serialises that capture. The capture must be cheap;
	// the function runs on another goroutine while Apply goes on.
	Snapshot() (func() ([]byte, error), error)
	// Restore replaces the state with a snapshot's.
	Restore(data []byte) error
}

// Errors returned by Propose, ReadIndex and the membership calls.
var (
	ErrNoQuorum        = errors.New("no quorum")
	ErrProposalDropped = errors.New("proposal dropped: leadership changed before it was committed; retry")
	ErrStopped         = errors.New("raft node stopped")
	ErrTimeout         = errors.New("raft: timed out waiting for the cluster")
	// ErrNotLeader matches every *NotLeaderError with errors.Is, for callers
	// that do not need the leader's id.
	ErrNotLeader = errors.New("not the leader")
)

// NotLeaderError is returned by Propose and the membership calls on a
// follower. Leader is 0 when no leader is known.
type NotLeaderError struct{ Leader uint64 }

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("not the leader (leader is %x)", e.Leader)
}

// Is makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Config configures a Node. Zero values take the defaults documented on
// each field; TestConfig is a preset with fast timers.
type Config struct {
	// ID is this member's raft id (non-zero, unique).
	ID uint64
	// DataDir holds the member's raft state: wal/ (log segments), snap/
	// (latest snapshot) and cluster-id.
	DataDir string
	// Peers is the initial cluster, this node included, used when the node
	// starts for the first time (and Join is false).
	Peers []*hivemindv1.Member
	// Join: the node was added to a running cluster with MemberAdd and
	// waits to be contacted by the leader.
	Join bool
	// TickInterval is one raft tick. Default 100ms.
	TickInterval time.Duration
	// ElectionTicks before a follower campaigns. Default 10.
	ElectionTicks int
	// HeartbeatTicks between leader heartbeats. Default 1.
	HeartbeatTicks int
	// SnapshotEvery applied entries a snapshot is taken. Default 10,000.
	SnapshotEvery uint64
	// SnapshotMargin entries are kept after a snapshot for slow followers.
	// Default 5,000.
	SnapshotMargin uint64
	// SnapshotEveryBytes of entry data applied, a snapshot is taken even
	// before SnapshotEvery entries, so the log in memory and on disk stays
	// bounded whatever the entries' sizes. Default 64 MiB.
	SnapshotEveryBytes uint64
	// SnapshotMarginBytes bounds the entries kept after a snapshot as
	// SnapshotMargin does, in bytes of entry data: whichever keeps fewer
	// entries wins. Default 64 MiB.
	SnapshotMarginBytes uint64
	// SegmentSize is the size WAL segments are preallocated to. Default
	// 64 MiB (SegmentSize); tests use less, as every open reads the newest
	// segment whole.
	SegmentSize int64
	// AutoPromote lets the leader promote learners once caught up. Default on
	// (set DisableAutoPromote to turn it off).
	DisableAutoPromote bool
	// Transport builds the transport; default: gRPC with Dial.
	Transport func(Reporter) Transport
	Dial      grpcclient.Config
	Logger    *slog.Logger
}

// TestConfig returns a preset for in-process tests: 10ms ticks, frequent
// snapshots.
func TestConfig(id uint64, dir string, peers []*hivemindv1.Member) Config {
	return Config{ID: id, DataDir: dir, Peers: peers, TickInterval: 10 * time.Millisecond, SnapshotEvery: 100, SnapshotMargin: 20, SegmentSize: 1 << 20}
}

func (c *Config) defaults() {
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 10_000
	}
	if c.SnapshotMargin == 0 {
		c.SnapshotMargin = 5_000
	}
	if c.SnapshotEveryBytes == 0 {
		c.SnapshotEveryBytes = 64 << 20
	}
	if c.SnapshotMarginBytes == 0 {
		c.SnapshotMarginBytes = 64 << 20
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = SegmentSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Node is one running raft member.
type Node struct {
	cfg     Config
	log     *slog.Logger
	sm      StateMachine
	storage *Storage
	rn      raft.Node
	tr      Transport

	lead         atomic.Uint64
	clusterID    atomic.Uint64
	clusterMu    sync.Mutex
	term         atomic.Uint64
	applied      atomic.Uint64
	lastAppended atomic.Uint64         // index of the last entry handed out in a Ready
	quorumErr    atomic.Pointer[error] // nil while this node has a quorum; see checkQuorum

	mu        sync.Mutex
	members   map[uint64]*hivemindv1.Member
	confState *raftpb.ConfState
	snapIndex uint64
	// sinceSnap is the entry data applied since the last snapshot began;
	// only the Ready loop touches it.
	sinceSnap   uint64
	snapshotNow bool
	snapping    bool                // a snapshot is being written in the background
	snapDone    chan snapshotDone   // its outcome, back to the Ready loop
	snapWriters sync.WaitGroup      // the goroutine writing it, waited for on halt
	waiters     map[uint64]*waiter  // by proposal id
	placed      map[uint64][]uint64 // log index → proposal ids, for waiters seen in a Ready
	reads       map[uint64]chan uint64
	lastHeard   map[uint64]time.Time
	appliedWake chan struct{} // closed and replaced whenever applied moves
	// confMu lets one membership change at a time be proposed from here:
	// raft silently turns a second one, proposed before the first is
	// applied, into an empty entry, and its caller would wait in vain.
	confMu sync.Mutex

	hookMu    sync.Mutex
	hooks     []hook
	hookSeq   uint64         // leader changes queued so far
	hookQueue []queuedChange // leader changes not yet handed to the hooks
	hookWake  chan struct{}  // capacity 1

	// Proposals waiting for the proposer (see batch.go).
	queueMu    sync.Mutex
	queue      []pending
	queueWake  chan struct{} // capacity 1
	readyTaken chan struct{} // capacity 1: a Ready with entries was taken

	nextID  atomic.Uint64
	stopc   chan struct{}
	done    chan struct{}
	stopped atomic.Bool
	started atomic.Bool
}

// New opens the node's storage, restores the latest snapshot into sm and
// prepares raft; Start runs it.
func New(cfg Config, sm StateMachine) (*Node, error) {
	cfg.defaults()
	if cfg.ID == 0 {
		return nil, errors.New("raftnode: ID must not be 0")
	}
	st, err := openStorage(cfg.DataDir, cfg.SegmentSize)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, log: cfg.Logger, sm: sm, storage: st,
		members:     map[uint64]*hivemindv1.Member{},
		confState:   &raftpb.ConfState{},
		waiters:     map[uint64]*waiter{},
		placed:      map[uint64][]uint64{},
		reads:       map[uint64]chan uint64{},
		lastHeard:   map[uint64]time.Time{},
		appliedWake: make(chan struct{}),
		stopc:       make(chan struct{}),
		done:        make(chan struct{}),
		snapDone:    make(chan snapshotDone, 1),
		hookWake:    make(chan struct{}, 1),
		queueWake:   make(chan struct{}, 1),
		readyTaken:  make(chan struct{}, 1),
	}
	n.nextID.Store(rand.Uint64() >> 1)
	if cfg.Transport == nil {
		cfg.Transport = func(r Reporter) Transport { return NewGRPCTransport(cfg.Dial, r, cfg.Logger) }
	}
	n.tr = cfg.Transport(n)

	if err := n.loadClusterID(); err != nil {
		st.Close()
		return nil, err
	}
	fresh := st.Fresh()
	snap, _ := st.Raft().Snapshot()
	if !raft.IsEmptySnap(snap) {
		if err := n.restore(snap); err != nil {
			st.Close()
			return nil, err
		}
	}
	rc := &raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   st.Raft(),
		Applied:                   n.applied.Load(),
		MaxSizePerMsg:             1 << 20,
		MaxInflightMsgs:           256,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   true,
		// Followers hand writes to the leader themselves (over gRPC), so
		// that only the leader's clock stamps commands.
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{cfg.Logger},
	}
	for _, m := range cfg.Peers {
		if m.GetId() != cfg.ID {
			n.tr.AddPeer(m.GetId(), m.GetPeerAddress())
		}
	}
	for id, m := range n.members {
		if id != cfg.ID {
			n.tr.AddPeer(id, m.GetPeerAddress())
		}
	}
	if fresh && !cfg.Join {
		var peers []raft.Peer
		for _, m := range cfg.Peers {
			ctx, err := proto.Marshal(m)
			if err != nil {
				return nil, err
			}
			peers = append(peers, raft.Peer{ID: m.GetId(), Context: ctx})
		}
		if len(peers) == 0 {
			st.Close()
			return nil, errors.New("raftnode: a new cluster needs its initial peers")
		}
		if err := n.saveClusterID(clusterIDFor(cfg.Peers)); err != nil {
			st.Close()
			return nil, fmt.Errorf("raftnode: cluster id: %w", err)
		}
		n.rn = raft.StartNode(rc, peers)
	} else {
		n.rn = raft.RestartNode(rc)
	}
	return n, nil
}

// OnLeaderChange registers fn, called whenever this node learns of a new
// leader (lead 0: none known). Calls come in the order the changes
// happened, one at a time, on a goroutine of their own: a slow fn delays
// later calls but never the raft loop. A hook registered after Start misses
// the changes before it.
func (n *Node) OnLeaderChange(fn func(lead uint64, isLeader bool)) {
	n.hookMu.Lock()
	n.hooks = append(n.hooks, hook{fn: fn, after: n.hookSeq})
	n.hookMu.Unlock()
}

// hook is a leader-change callback and the number of changes queued before
// it was registered, which it does not get.
type hook struct {
	fn    func(lead uint64, isLeader bool)
	after uint64
}

type queuedChange struct {
	seq, lead uint64
}

// leaderChanged queues a leader change for the hooks.
func (n *Node) leaderChanged(lead uint64) {
	n.hookMu.Lock()
	n.hookSeq++
	n.hookQueue = append(n.hookQueue, queuedChange{seq: n.hookSeq, lead: lead})
	n.hookMu.Unlock()
	select {
	case n.hookWake <- struct{}{}:
	default:
	}
}

// runHooks calls the leader-change hooks in order until the node stops.
func (n *Node) runHooks() {
	for {
		select {
		case <-n.stopc:
			return
		case <-n.hookWake:
		}
		n.hookMu.Lock()
		queue := n.hookQueue
		n.hookQueue = nil
		hooks := slices.Clone(n.hooks)
		n.hookMu.Unlock()
		for _, c := range queue {
			for _, h := range hooks {
				if c.seq > h.after {
					h.fn(c.lead, c.lead == n.cfg.ID)
				}
			}
		}
	}
}

// Start runs the Ready loop and the ticker.
func (n *Node) Start() {
	n.started.Store(true)
	go n.run()
	go n.runHooks()
	go n.runProposer()
	if !n.cfg.DisableAutoPromote {
		go n.promoteLoop()
	}
}

// ID is this node's raft id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Leader is the current leader's id, 0 when none is known.
func (n *Node) Leader() uint64 { return n.lead.Load() }

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.lead.Load() == n.cfg.ID }

// Term is the current raft term as last persisted.
func (n *Node) Term() uint64 { return n.term.Load() }

// AppliedIndex is the index of the last applied entry.
func (n *Node) AppliedIndex() uint64 { return n.applied.Load() }

// Step hands a message from a peer to raft.
func (n *Node) Step(ctx context.Context, m *raftpb.Message) error {
	if n.stopped.Load() {
		return ErrStopped
	}
	n.mu.Lock()
	n.lastHeard[m.GetFrom()] = time.Now()
	n.mu.Unlock()
	err := n.rn.Step(ctx, m)
	if errors.Is(err, raft.ErrStopped) {
		return ErrStopped
	}
	return err
}

// ReportUnreachable implements Reporter.
func (n *Node) ReportUnreachable(id uint64) { n.rn.ReportUnreachable(id) }

// ReportSnapshot implements Reporter.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	n.rn.ReportSnapshot(id, status)
}

func (n *Node) run() {
	defer close(n.done)
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	for {
		select {
		case <-n.stopc:
			return
		case <-ticker.C:
			n.rn.Tick()
			n.checkQuorum()
		case d := <-n.snapDone:
			// A snapshot may have come due while this one was written.
			err := n.finishSnapshot(d)
			if err == nil {
				err = n.maybeSnapshot()
			}
			if err != nil {
				n.log.Error("raft: stopping after a storage failure", "err", err)
				n.fail(err)
				return
			}
		case rd := <-n.rn.Ready():
			if err := n.handleReady(rd); err != nil {
				n.log.Error("raft: stopping after a storage failure", "err", err)
				n.fail(err)
				return
			}
			n.rn.Advance()
		}
	}
}

func (n *Node) handleReady(rd raft.Ready) error {
	if rd.SoftState != nil && rd.SoftState.Lead != n.lead.Load() {
		lead := rd.SoftState.Lead
		n.lead.Store(lead)
		n.leaderChanged(lead)
		n.checkQuorum()
	}
	n.placeWaiters(rd.Entries)
	if len(rd.Entries) > 0 {
		n.lastAppended.Store(rd.Entries[len(rd.Entries)-1].GetIndex())
		select {
		case n.readyTaken <- struct{}{}:
		default:
		}
	}
	if hs := rd.HardState; hs != nil && hs.GetTerm() > n.term.Load() {
		n.term.Store(hs.GetTerm())
		n.dropStaleWaiters(hs.GetTerm())
	}
	// The leader may send its appends while it writes them itself (the
	// entries count towards the quorum only once its own MsgAppResp, which
	// raft emits after this Ready, is processed); a follower must persist
	// before it answers.
	leader := rd.SoftState != nil && rd.SoftState.RaftState == raft.StateLeader || rd.SoftState == nil && n.IsLeader()
	if leader {
		n.tr.Send(rd.Messages)
	}
	if err := n.storage.Save(rd.HardState, rd.Entries, rd.Snapshot, rd.MustSync); err != nil {
		return err
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.restore(rd.Snapshot); err != nil {
			return err
		}
	}
	if !leader {
		n.tr.Send(rd.Messages)
	}
	for _, rs := range rd.ReadStates {
		n.readDone(rs)
	}
	applied := false
	for _, e := range rd.CommittedEntries {
		if e.GetIndex() <= n.applied.Load() {
			continue
		}
		if err := n.apply(e); err != nil {
			return err
		}
		applied = true
	}
	if applied {
		n.wakeApplied()
	}
	return n.maybeSnapshot()
}

func (n *Node) apply(e *raftpb.Entry) error {
	switch e.GetType() {
	case raftpb.EntryNormal:
		// A corrupt entry stops the node before any of it is applied.
		if err := frames(e.GetData(), func(uint64, []byte) {}); err != nil {
			return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
		}
		decoded := n.decodedProposals(e.GetData())
		var results []result
		_ = frames(e.GetData(), func(id uint64, data []byte) {
			results = append(results, result{id, n.sm.Apply(e.GetIndex(), data, decoded[id])})
		})
		n.resolve(e.GetIndex(), results)
	case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
		n.resolve(e.GetIndex(), nil)
		cc, err := decodeConfChange(e)
		if err != nil {
			return err
		}
		cs := n.rn.ApplyConfChange(cc)
		n.applyMembers(cc, cs)
	}
	n.sinceSnap += uint64(len(e.GetData()))
	n.applied.Store(e.GetIndex())
	return nil
}

// wakeApplied wakes WaitApplied callers once a Ready's entries are applied.
func (n *Node) wakeApplied() {
	n.mu.Lock()
	close(n.appliedWake)
	n.appliedWake = make(chan struct{})
	n.mu.Unlock()
}

// WaitApplied returns once index idx has been applied locally.
func (n *Node) WaitApplied(ctx context.Context, idx uint64) error {
	for {
		n.mu.Lock()
		wake := n.appliedWake
		n.mu.Unlock()
		if n.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return ErrStopped
		case <-wake:
		}
	}
}

// Stop hands leadership to the most caught-up voter (when this node leads),
// then stops raft, the transport and the storage. Pending calls fail with
// ErrStopped.
func (n *Node) Stop(ctx context.Context) error {
	if n.stopped.Load() {
		return nil
	}
	n.transferLeadership(ctx)
	return n.halt()
}

// Crash stops the node abruptly, as a killed process would: no leadership
// transfer. What was acknowledged is on disk; the rest is lost. For tests.
func (n *Node) Crash() error { return n.halt() }

func (n *Node) halt() error {
	if n.stopped.Swap(true) {
		return nil
	}
	close(n.stopc)
	if n.started.Load() {
		<-n.done
	} else {
		close(n.done) // nothing else will, and waiters select on it
	}
	n.rn.Stop()
	n.tr.Close()
	n.fail(ErrStopped)
	// A snapshot being written finishes before the storage under it closes.
	n.snapWriters.Wait()
	return n.storage.Close()
}

func (n *Node) transferLeadership(ctx context.Context) {
	if !n.IsLeader() {
		return
	}
	st := n.rn.Status()
	var target, best uint64
	for id, pr := range st.Progress {
		if id == n.cfg.ID || pr.IsLearner {
			continue
		}
		if pr.Match >= best {
			target, best = id, pr.Match
		}
	}
	if target == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	n.rn.TransferLeadership(ctx, n.cfg.ID, target)
	for n.IsLeader() && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(n.cfg.TickInterval / 2):
		}
	}
	if !n.IsLeader() {
		n.log.Info("raft: leadership transferred", "to", fmt.Sprintf("%x", target))
	}
}

// raftLogger adapts slog to raft's logger; raft's chatter goes to debug.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)                 { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(format string, v ...any) { r.l.Debug(fmt.Sprintf(format, v...)) }
func (r raftLogger) Error(v ...any)                 { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(format string, v ...any) { r.l.Error(fmt.Sprintf(format, v...)) }
func (r raftLogger) Info(v ...any)                  { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(format string, v ...any)  { r.l.Debug(fmt.Sprintf(format, v...)) }
func (r raftLogger) Warning(v ...any)               { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(format string, v ...any) {
	r.l.Warn(fmt.Sprintf(format, v...))
}
func (r raftLogger) Fatal(v ...any)                 { r.l.Error(fmt.Sprint(v...)); panic(fmt.Sprint(v...)) }
func (r raftLogger) Fatalf(format string, v ...any) { r.Fatal(fmt.Sprintf(format, v...)) }
func (r raftLogger) Panic(v ...any)                 { panic(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(format string, v ...any) { panic(fmt.Sprintf(format, v...)) }
