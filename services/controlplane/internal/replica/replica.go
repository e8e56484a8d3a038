// Package replica is one control-plane member as the API sees it: the pure
// state machine (fsm) driven by a raft node (raftnode), the watch hub fed by
// applied revisions, the hybrid logical clock that stamps commands, and the
// forwarding of writes from followers to the leader.
//
// Only the leader stamps and proposes commands, so every timestamp in the
// log comes from the clock of the leader of its term; that is what lets
// intents measure leases (see package fsm).
package replica

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode"
	"github.com/hivemind/hivemind/services/controlplane/internal/watch"
)

// MemberID derives a member's raft id from its name, so that every node
// computes the same ids from the same --initial-cluster.
func MemberID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	id := h.Sum64()
	if id == 0 {
		id = 1
	}
	return id
}

// Config configures a Replica.
type Config struct {
	// Name of this member; its raft id is MemberID(Name).
	Name string
	// Cluster is the initial cluster (name, peer and gRPC addresses), this
	// member included. Ids are filled in from the names.
	Cluster []*hivemindv1.Member
	// Raft tunes the raft node; ID, Peers and Logger are set here.
	Raft raftnode.Config
	// FSM bounds the state machine.
	FSM fsm.Config
	// Watch configures the watch hub.
	Watch watch.Config
	// Dial configures connections to other members (forwarding).
	Dial   grpcclient.Config
	Logger *slog.Logger
	// Now is the wall clock for the HLC; nil means time.Now.
	Now func() time.Time
	// MaxClockSkew is how far ahead of the leader's clock a writer's hlc
	// (PutRequest.hlc, DeleteRequest.hlc) may be; a write stamped later is
	// refused with INVALID_ARGUMENT. Default DefaultMaxClockSkew.
	MaxClockSkew time.Duration
}

// DefaultMaxClockSkew bounds writers' clocks: far beyond NTP error, yet a
// writer whose clock is further ahead should be noticed, not followed (the
// same reasoning as hlc.DefaultMaxDrift).
const DefaultMaxClockSkew = hlc.DefaultMaxDrift

// Replica is one running control-plane member.
type Replica struct {
	cfg     Config
	log     *slog.Logger
	node    *raftnode.Node
	machine *fsm.Machine
	hub     *watch.Hub
	clock   *hlc.Clock

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// New opens the member's storage and restores its state; Start runs it.
func New(cfg Config) (*Replica, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		return nil, errors.New("replica: a member needs a name")
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = DefaultMaxClockSkew
	}
	r := &Replica{cfg: cfg, log: cfg.Logger, machine: fsm.New(cfg.FSM), clock: hlc.New(cfg.Now), conns: map[string]*grpc.ClientConn{}}
	wcfg := cfg.Watch
	wcfg.Header = func(rev int64) *hivemindv1.ResponseHeader { return r.Header(rev, false) }
	r.hub = watch.New(r.machine, wcfg)

	rc := cfg.Raft
	rc.ID = MemberID(cfg.Name)
	rc.Logger = cfg.Logger
	rc.Dial = cfg.Dial
	rc.Peers = nil
	for _, m := range cfg.Cluster {
		m = proto.Clone(m).(*hivemindv1.Member)
		m.Id = MemberID(m.GetName())
		rc.Peers = append(rc.Peers, m)
	}
	node, err := raftnode.New(rc, &applier{m: r.machine, hub: r.hub})
	if err != nil {
		return nil, err
	}
	r.node = node
	node.OnLeaderChange(r.leaderChanged)
	return r, nil
}

// Start runs the raft node.
func (r *Replica) Start() { r.node.Start() }

// Stop hands over leadership and stops.
func (r *Replica) Stop(ctx context.Context) error {
	err := r.node.Stop(ctx)
	r.closeConns()
	return err
}

// Crash stops abruptly, without handing over leadership (tests only).
func (r *Replica) Crash() error {
	err := r.node.Crash()
	r.closeConns()
	return err
}

func (r *Replica) closeConns() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = map[string]*grpc.ClientConn{}
}

// Machine is the local state machine.
func (r *Replica) Machine() *fsm.Machine { return r.machine }

// Hub serves watches.
func (r *Replica) Hub() *watch.Hub { return r.hub }

// Node is the raft node (for tests and status).
func (r *Replica) Node() *raftnode.Node { return r.node }

// Name is this member's name.
func (r *Replica) Name() string { return r.cfg.Name }

// ClusterID is the raft cluster id (0 while a joining member has not been
// contacted yet).
func (r *Replica) ClusterID() uint64 { return r.node.ClusterID() }

// applier feeds committed entries to the state machine and wakes watchers.
type applier struct {
	m   *fsm.Machine
	hub *watch.Hub
}

// Apply applies a command: on the leader, the one it proposed (data is its
// encoding); elsewhere, decoded from data.
func (a *applier) Apply(_ uint64, data []byte, decoded any) any {
	cmd, ok := decoded.(*raftv1.Command)
	if !ok {
		cmd = &raftv1.Command{}
		if err := cmd.UnmarshalVT(data); err != nil {
			return &raftv1.Result{Code: int32(codes.Internal), Message: "undecodable log entry: " + err.Error()}
		}
	}
	res, events := a.m.Apply(cmd)
	if len(events) > 0 && a.hub != nil {
		a.hub.Notify()
	}
	return res
}

// Snapshot captures the machine (its stored messages are never modified, so
// the capture shares them) and serialises it later, off the apply loop.
func (a *applier) Snapshot() (func() ([]byte, error), error) {
	s := a.m.Snapshot()
	return s.MarshalVT, nil
}

func (a *applier) Restore(b []byte) error {
	s := &raftv1.Snapshot{}
	if err := s.UnmarshalVT(b); err != nil {
		return err
	}
	if err := a.m.Restore(s); err != nil {
		return err
	}
	if a.hub != nil {
		a.hub.Notify()
	}
	return nil
}

// StateMachine drives m with raft entries and snapshots as a running
// member does, for work on a data directory with no member running
// (raftnode.Replay).
func StateMachine(m *fsm.Machine) raftnode.StateMachine { return &applier{m: m} }

// leaderChanged: a new leader first commits a LeaderChange command, so
// leases are measured from its own clock from then on.
func (r *Replica) leaderChanged(lead uint64, isLeader bool) {
	if !isLeader {
		return
	}
	r.log.Info("became leader", "term", r.node.Term())
	for attempt := 0; attempt < 20 && r.node.IsLeader(); attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := r.Propose(ctx, &raftv1.Command{Op: &raftv1.Command_LeaderChange{LeaderChange: &raftv1.LeaderChange{Leader: r.cfg.Name}}})
		cancel()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Propose replicates cmd and returns its result once applied here. On a
// follower the command is forwarded to the leader.
//
// The leader refuses a write whose writer's hlc is too far ahead of its own
// clock (fsm.CheckWriterClock) here, before proposing: only the leader's
// clock stamps commands, and checking against that stamp keeps the state
// machine free of clocks and of the bound, which is this member's
// configuration rather than replicated state. The refusal is a result, as a
// rejection by the machine is, so it reaches a forwarding follower's caller
// as INVALID_ARGUMENT.
func (r *Replica) Propose(ctx context.Context, cmd *raftv1.Command) (*raftv1.Result, error) {
	if cmd.GetSource() == "" {
		cmd.Source = r.cfg.Name
	}
	if !r.node.IsLeader() {
		return r.forward(ctx, cmd)
	}
	cmd.Hlc = uint64(r.clock.Now())
	cmd.Proposer = r.cfg.Name
	if err := fsm.CheckWriterClock(cmd, r.cfg.MaxClockSkew); err != nil {
		return fsm.Rejected(err), nil
	}
	data, err := cmd.MarshalVT()
	if err != nil {
		return nil, err
	}
	res, err := r.node.Propose(ctx, data, cmd)
	var nl *raftnode.NotLeaderError
	if errors.As(err, &nl) {
		cmd.Hlc, cmd.Proposer = 0, ""
		return r.forward(ctx, cmd)
	}
	if err != nil {
		return nil, r.nodeErr(err)
	}
	return res.(*raftv1.Result), nil
}

func (r *Replica) nodeErr(err error) error {
	switch {
	case errors.Is(err, raftnode.ErrNoQuorum):
		return err
	case errors.Is(err, raftnode.ErrProposalDropped), errors.Is(err, raftnode.ErrStopped), errors.Is(err, raftnode.ErrTimeout):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// leaderAddr is the gRPC address of the current leader.
func (r *Replica) leaderAddr() (string, string, error) {
	lead := r.node.Leader()
	if lead == 0 {
		_, why := r.node.Degraded()
		return "", "", fmt.Errorf("%w: %s", ErrNoQuorum, why)
	}
	for _, m := range r.node.Members() {
		if m.GetId() == lead {
			return m.GetName(), m.GetGrpcAddress(), nil
		}
	}
	return "", "", fmt.Errorf("%w: leader %x has no known address", ErrUnavailable, lead)
}

func (r *Replica) conn(addr string) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conns[addr]; ok {
		return c, nil
	}
	cfg := r.cfg.Dial
	cfg.MaxRetries = -1
	c, err := grpcclient.Dial(addr, cfg)
	if err != nil {
		return nil, err
	}
	r.conns[addr] = c
	return c, nil
}

func (r *Replica) forward(ctx context.Context, cmd *raftv1.Command) (*raftv1.Result, error) {
	lead := r.node.Leader()
	name, addr, err := r.leaderAddr()
	if err != nil {
		return nil, err
	}
	c, err := r.conn(addr)
	if err != nil {
		return nil, err
	}
	fctx, cancel := r.whileLeader(ctx, lead)
	defer cancel()
	resp, err := raftv1.NewRaftClient(c).Forward(fctx, &raftv1.ForwardRequest{Command: cmd})
	if err != nil {
		if r.node.Leader() != lead {
			// Say why when the leader went with the quorum (the usual
			// reason a leader is lost), not just that it went.
			if bad, why := r.node.Degraded(); bad {
				return nil, fmt.Errorf("%w: %s (the leader %s was lost while forwarding)", ErrNoQuorum, why, name)
			}
			return nil, fmt.Errorf("%w: the leader %s was lost while forwarding; retry", ErrUnavailable, name)
		}
		switch st, _ := status.FromError(err); {
		case st.Code() == codes.Unavailable:
			r.dropConn(addr)
			return nil, fmt.Errorf("%w: forwarding to the leader %s: %s", ErrUnavailable, name, st.Message())
		case st.Code() == codes.Canceled && ctx.Err() == nil:
			// Not the caller: another forward dropped the connection this
			// one shared, as above.
			return nil, fmt.Errorf("%w: forwarding to the leader %s: the connection was closed; retry", ErrUnavailable, name)
		}
		return nil, err
	}
	return resp.GetResult(), nil
}

// dropConn forgets a connection that failed, so the next call dials (and
// resolves the name) again.
func (r *Replica) dropConn(addr string) {
	r.mu.Lock()
	c, ok := r.conns[addr]
	delete(r.conns, addr)
	r.mu.Unlock()
	if ok {
		c.Close()
	}
}

// whileLeader returns a context that ends when lead stops being the leader
// this member follows. A leader that dies leaves an open connection that
// nothing answers; raft notices within an election timeout, and so the
// forwarded call ends then instead of waiting for the caller's deadline.
func (r *Replica) whileLeader(ctx context.Context, lead uint64) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if r.node.Leader() != lead {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

// ReadIndex waits for a linearizable read point.
func (r *Replica) ReadIndex(ctx context.Context) error {
	if err := r.node.ReadIndex(ctx); err != nil {
		return r.nodeErr(err)
	}
	return nil
}

// Header describes the state an answer reflects.
func (r *Replica) Header(rev int64, stale bool) *hivemindv1.ResponseHeader {
	return &hivemindv1.ResponseHeader{Revision: rev, RaftTerm: r.node.Term(), NodeName: r.cfg.Name, Stale: stale, Epoch: r.machine.Epoch()}
}

// IsPeer reports whether name is a control-plane member as far as this
// member knows: a voter or learner of the raft configuration, one of the
// initial members it was started with, or anyone while it knows no
// member at all (a new member waiting for its first snapshot).
func (r *Replica) IsPeer(name string) bool {
	for _, m := range r.cfg.Cluster {
		if m.GetName() == name {
			return true
		}
	}
	known, any := r.node.HasMember(MemberID(name), name)
	return known || !any
}

// Members lists the control-plane members.
func (r *Replica) Members() []*hivemindv1.Member { return r.node.Members() }

// Status reports this member's view of the cluster.
func (r *Replica) Status(context.Context) (*hivemindv1.StatusResponse, error) {
	st := r.node.Status()
	resp := &hivemindv1.StatusResponse{
		Header:          r.Header(r.machine.Revision(), true),
		Id:              st.ID,
		LeaderId:        st.Lead,
		Term:            st.Term,
		AppliedRevision: r.machine.Revision(),
		AppliedIndex:    st.Applied,
		Epoch:           r.machine.Epoch(),
		OldestRevision:  r.machine.OldestRevision(),
		Degraded:        st.Degraded,
		DegradedReason:  st.Reason,
	}
	for _, m := range r.node.Members() {
		if m.GetId() == st.Lead {
			resp.LeaderName = m.GetName()
		}
		if m.GetLearner() {
			resp.Learners = append(resp.Learners, m)
		} else {
			resp.Voters = append(resp.Voters, m)
		}
	}
	return resp, nil
}

// leaderAPI returns a ControlPlane client on the leader, for calls a
// follower hands over as they are.
func (r *Replica) leaderAPI() (hivemindv1.ControlPlaneClient, error) {
	_, addr, err := r.leaderAddr()
	if err != nil {
		return nil, err
	}
	c, err := r.conn(addr)
	if err != nil {
		return nil, err
	}
	return hivemindv1.NewControlPlaneClient(c), nil
}

// MemberAdd adds a member as a learner (the leader promotes it once it has
// caught up).
func (r *Replica) MemberAdd(ctx context.Context, req *hivemindv1.MemberAddRequest) (*hivemindv1.Member, error) {
	if !r.node.IsLeader() {
		api, err := r.leaderAPI()
		if err != nil {
			return nil, err
		}
		ctx, cancel := r.whileLeader(ctx, r.node.Leader())
		defer cancel()
		resp, err := api.MemberAdd(ctx, req)
		if err != nil {
			return nil, err
		}
		return resp.GetMember(), nil
	}
	m := &hivemindv1.Member{Id: MemberID(req.GetName()), Name: req.GetName(), PeerAddress: req.GetPeerAddress(), GrpcAddress: req.GetGrpcAddress(), Learner: true}
	if m.GrpcAddress == "" {
		m.GrpcAddress = m.PeerAddress
	}
	for _, cur := range r.node.Members() {
		if cur.GetId() == m.GetId() {
			return nil, fmt.Errorf("%w: member %q already exists", ErrFailedPrecondition, req.GetName())
		}
	}
	if err := r.node.AddLearner(ctx, m); err != nil {
		return nil, r.nodeErr(err)
	}
	return m, nil
}

// MemberRemove removes a member by id or name.
func (r *Replica) MemberRemove(ctx context.Context, req *hivemindv1.MemberRemoveRequest) error {
	if !r.node.IsLeader() {
		api, err := r.leaderAPI()
		if err != nil {
			return err
		}
		ctx, cancel := r.whileLeader(ctx, r.node.Leader())
		defer cancel()
		_, err = api.MemberRemove(ctx, req)
		return err
	}
	id := req.GetId()
	if id == 0 {
		id = MemberID(req.GetName())
	}
	found := false
	for _, m := range r.node.Members() {
		found = found || m.GetId() == id
	}
	if !found {
		return fmt.Errorf("%w: no member %q (id %x)", ErrNotFound, req.GetName(), id)
	}
	if err := r.node.RemoveMember(ctx, id); err != nil {
		return r.nodeErr(err)
	}
	return nil
}
