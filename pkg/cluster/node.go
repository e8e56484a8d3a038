package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/backoff"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/registry"
	"github.com/hivemind/hivemind/pkg/ticket"
)

// RoleControlPlane is the role of control-plane nodes.
const RoleControlPlane = auth.RoleControlPlane

// NodeConfig configures a Node.
type NodeConfig struct {
	// Name, roles and advertised gRPC address of this node.
	Name        string
	Roles       *hivemindv1.Roles
	GRPCAddress string
	// Key is the node's identity key; every join is signed with it.
	Key auth.NodeKey
	// Issuers gives the keys of the control-plane members that sign
	// tickets, for gossip admission. Nil: this node's copy of the registry
	// (nodes that are not on the control plane).
	Issuers ticket.KeyOf
	// Seeds are gRPC addresses of members to join through (any role).
	// Ignored when Local is set.
	Seeds []string
	// Local is the control plane's own registry: a control-plane node
	// joins through it instead of through seeds.
	Local Registry
	// Epoch, on the control plane, is the registry's current epoch; when
	// it moves past the ticket's, the node joins again. Nil elsewhere: there
	// gossip tells (OnNewerEpoch).
	Epoch func() uint64
	// Dial is how this node reaches others (TLS, node authentication).
	Dial grpcclient.Config
	// Gossip is the gossip preset; Name, Meta and Observer are set here.
	Gossip gossip.Config
	// RetryInterval between join attempts and repair passes. Default 2s.
	RetryInterval time.Duration
	// OnReady is called whenever readiness changes: ready once joined and
	// every required role is present, with the reason when not.
	OnReady func(ready bool, reason string)
	// OnJoin, when set, is called after every admitted join; first is true
	// for the node's first join in this process. A node that joins again
	// (a new epoch) asks for a new certificate then.
	OnJoin func(first bool)
	// OnGossip, when set, sees every change of the gossip view.
	OnGossip func(gossip.Event)
	Logger   *slog.Logger
}

// Node is this process's membership: it joins through a seed (committed
// by the control plane), gossips with its ticket, joins again when the
// epoch moves on, reports readiness from its required roles, and leaves
// (committed first, then gossiped) on Stop.
type Node struct {
	cfg   NodeConfig
	log   *slog.Logger
	agent *gossip.Agent
	svc   *Service

	rejoin    chan struct{}
	joined    chan struct{}
	seenEpoch atomic.Uint64 // the newest epoch a gossip member has shown

	mu       sync.Mutex
	registry Registry // nil until joined (except on the control plane)
	cp       *cpclient.Client
	cpAddrs  []string
	digest   *hivemindv1.MembershipDigest
	ready    bool
	reason   string
	seeds    map[string]*grpc.ClientConn
	stopped  bool
	cancel   context.CancelFunc
	done     chan struct{}
	joinedAt time.Time

	members *memberCache
}

// NewNode starts gossip (alone until joined) and returns the node; serve
// Service() on the gRPC server, then Start.
func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	if cfg.Local == nil && len(cfg.Seeds) == 0 {
		return nil, errors.New("cluster: a node that is not on the control plane needs at least one seed (--join)")
	}
	if !cfg.Key.Valid() {
		return nil, errors.New("cluster: the node needs its identity key (NodeConfig.Key)")
	}
	n := &Node{cfg: cfg, log: cfg.Logger, rejoin: make(chan struct{}, 1), joined: make(chan struct{}), seeds: map[string]*grpc.ClientConn{}, reason: "not joined yet"}
	n.members = newMemberCache(n)
	gc := cfg.Gossip
	gc.Issuers = cfg.Issuers
	if gc.Issuers == nil {
		gc.Issuers = n.members.issuerKey
	}
	gc.Name = cfg.Name
	gc.Meta = gossip.Meta{Roles: cfg.Roles.GetPerforms(), GRPCAddr: cfg.GRPCAddress}
	gc.OnNewerEpoch = func(epoch uint64, from string) {
		n.log.Info("a member shows a newer epoch", "epoch", epoch, "from", from)
		n.seenEpoch.Store(max(n.seenEpoch.Load(), epoch))
		n.pokeRejoin()
	}
	gc.Observer = gossip.ObserverFunc(func(e gossip.Event) {
		if cfg.OnGossip != nil {
			cfg.OnGossip(e)
		}
	})
	agent, err := gossip.New(gc)
	if err != nil {
		return nil, err
	}
	n.agent = agent
	if cfg.Local != nil {
		n.registry = cfg.Local
	}
	n.svc = &Service{NodeName: cfg.Name, Registry: (*nodeRegistry)(n), Gossip: n}
	return n, nil
}

// Service is the Membership service this node serves.
func (n *Node) Service() *Service { return n.svc }

// Agent is the node's gossip agent.
func (n *Node) Agent() *gossip.Agent { return n.agent }

// Joined is closed once the node has been admitted.
func (n *Node) Joined() <-chan struct{} { return n.joined }

// ControlPlane returns a client of the control plane, once joined (on the
// control plane itself: nil).
func (n *Node) ControlPlane() *cpclient.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cp
}

// Ready reports readiness and, when not ready, why.
func (n *Node) Ready() (bool, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready, n.reason
}

// Start joins in the background and keeps the membership up until Stop.
func (n *Node) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	n.mu.Lock()
	n.cancel, n.done = cancel, make(chan struct{})
	n.mu.Unlock()
	go n.run(ctx)
}

// Stop leaves: the leave is committed first, then gossiped; then gossip
// stops. A node that never joined just stops.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil
	}
	n.stopped = true
	cancel, done, reg := n.cancel, n.done, n.registry
	n.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	var errs []error
	select {
	case <-n.joined:
		if _, err := reg.Leave(ctx, &hivemindv1.LeaveRequest{Name: n.cfg.Name}); err != nil {
			errs = append(errs, fmt.Errorf("commit leave: %w", err))
		}
		timeout := time.Second
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		if err := n.agent.Leave(timeout); err != nil {
			errs = append(errs, fmt.Errorf("gossip leave: %w", err))
		}
	default:
	}
	errs = append(errs, n.agent.Shutdown())
	n.mu.Lock()
	for _, c := range n.seeds {
		c.Close()
	}
	if n.cp != nil {
		n.cp.Close()
	}
	n.mu.Unlock()
	return errors.Join(errs...)
}

func (n *Node) pokeRejoin() {
	select {
	case n.rejoin <- struct{}{}:
	default:
	}
}

func (n *Node) run(ctx context.Context) {
	defer close(n.done)
	// One idempotency key for every attempt of the first join: an attempt
	// that timed out after its join was committed is not committed twice.
	key := cpclient.NewIdempotencyKey()
	for !n.join(ctx, key) {
		if backoff.Sleep(ctx, n.cfg.RetryInterval) != nil {
			return
		}
	}
	close(n.joined)
	t := time.NewTicker(n.cfg.RetryInterval)
	defer t.Stop()
	for {
		n.checkReady()
		select {
		case <-ctx.Done():
			return
		case <-n.rejoin:
			// A node that has not joined yet sees every member's epoch as
			// newer than its own; once the join that was under way then
			// brought a ticket for that epoch, there is nothing to rejoin.
			if seen := n.seenEpoch.Load(); seen > n.agent.LocalNode().Meta.Epoch {
				n.log.Info("a member shows a newer epoch; joining again", "epoch", seen)
				n.join(ctx, cpclient.NewIdempotencyKey())
			}
		case <-t.C:
			if n.cfg.Epoch != nil && n.cfg.Epoch() > n.agent.LocalNode().Meta.Epoch {
				n.log.Info("the epoch moved on; joining again", "epoch", n.cfg.Epoch())
				n.join(ctx, cpclient.NewIdempotencyKey())
			}
			n.repair(ctx)
		}
	}
}

// join asks for admission once (through each seed in turn), installs the
// ticket and joins gossip. It reports success.
func (n *Node) join(ctx context.Context, key string) bool {
	self := n.agent.LocalNode()
	req := &hivemindv1.JoinRequest{
		Name: n.cfg.Name, Roles: n.cfg.Roles, GrpcAddress: n.cfg.GRPCAddress,
		GossipAddress: self.Addr, Incarnation: self.Meta.Incarnation,
		IdempotencyKey: key,
	}
	n.cfg.Key.SignJoin(req)
	resp, err := n.askJoin(ctx, req)
	if err != nil {
		n.log.Warn("join not admitted yet; retrying", "err", err)
		n.setReady(false, "not admitted: "+err.Error())
		return false
	}
	if err := n.agent.SetTicket(resp.GetTicket(), resp.GetDigest().GetEpoch(), time.Second); err != nil && !errors.Is(err, gossip.ErrShutdown) {
		n.log.Warn("ticket not announced yet", "err", err)
	}
	n.mu.Lock()
	n.digest = resp.GetDigest()
	n.joinedAt = time.Now()
	n.mu.Unlock()
	n.members.fill(resp.GetDigest())
	if err := n.useControlPlane(resp.GetDigest()); err != nil {
		n.log.Warn("no control-plane endpoint in the digest", "err", err)
		return false
	}
	n.gossipJoin(resp.GetDigest())
	if n.cfg.OnJoin != nil {
		select {
		case <-n.joined:
			n.cfg.OnJoin(false)
		default:
			n.cfg.OnJoin(true)
		}
	}
	n.log.Info("admitted", "epoch", resp.GetDigest().GetEpoch(), "revision", resp.GetDigest().GetRevision(),
		"members", len(resp.GetDigest().GetMembers()), "by", resp.GetAnsweredBy())
	return true
}

func (n *Node) askJoin(ctx context.Context, req *hivemindv1.JoinRequest) (*hivemindv1.JoinResponse, error) {
	if n.cfg.Local != nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return n.cfg.Local.Join(cctx, req)
	}
	var errs []string
	seeds := slices.Clone(n.cfg.Seeds)
	rand.Shuffle(len(seeds), func(i, j int) { seeds[i], seeds[j] = seeds[j], seeds[i] })
	for _, s := range seeds {
		if s == n.cfg.GRPCAddress {
			continue
		}
		conn, err := n.seedConn(s)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var resp *hivemindv1.JoinResponse
			resp, err = hivemindv1.NewMembershipClient(conn).Join(cctx, req)
			cancel()
			if err == nil {
				return resp, nil
			}
		}
		errs = append(errs, fmt.Sprintf("%s: %v", s, err))
	}
	return nil, errors.New(strings.Join(errs, "; "))
}

func (n *Node) seedConn(addr string) (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.seeds[addr]; ok {
		return c, nil
	}
	c, err := grpcclient.Dial(addr, n.cfg.Dial)
	if err != nil {
		return nil, err
	}
	n.seeds[addr] = c
	return c, nil
}

// useControlPlane points the node's registry at the control-plane members
// of the digest (not needed on the control plane itself).
func (n *Node) useControlPlane(d *hivemindv1.MembershipDigest) error {
	if n.cfg.Local != nil {
		return nil
	}
	var addrs []string
	for _, m := range d.GetMembers() {
		if registry.Performs(m, RoleControlPlane) && m.GetState() != hivemindv1.MemberState_MEMBER_STATE_LEFT && m.GetGrpcAddress() != "" {
			addrs = append(addrs, m.GetGrpcAddress())
		}
	}
	sort.Strings(addrs)
	if len(addrs) == 0 {
		return errors.New("the digest lists no control-plane member")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if slices.Equal(addrs, n.cpAddrs) {
		return nil
	}
	cp, err := cpclient.New(cpclient.Config{Endpoints: addrs, Dial: n.cfg.Dial})
	if err != nil {
		return err
	}
	if n.cp != nil {
		n.cp.Close()
	}
	n.cp, n.cpAddrs, n.registry = cp, addrs, Remote{CP: cp, Log: n.log}
	return nil
}

// gossipJoin joins the gossip of the registry's live members that this
// node's gossip does not know yet.
func (n *Node) gossipJoin(d *hivemindv1.MembershipDigest) {
	view := n.agent.Members()
	var addrs []string
	for _, m := range d.GetMembers() {
		if m.GetName() == n.cfg.Name || m.GetGossipAddress() == "" || m.GetState() == hivemindv1.MemberState_MEMBER_STATE_LEFT {
			continue
		}
		if g, ok := view[m.GetName()]; ok && (g.State == gossip.StateAlive || g.State == gossip.StateSuspect) {
			continue
		}
		addrs = append(addrs, m.GetGossipAddress())
	}
	if len(addrs) == 0 {
		return
	}
	if k, err := n.agent.Join(addrs); err != nil {
		n.log.Debug("gossip join", "tried", len(addrs), "answered", k, "err", err)
	}
}

// repair re-reads the registry and joins gossip with members it misses:
// control-plane nodes join the registry in any order, and a node that was
// cut off may have lost everyone.
func (n *Node) repair(ctx context.Context) {
	n.mu.Lock()
	reg := n.registry
	n.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	d, err := reg.List(cctx, true)
	if err != nil {
		return
	}
	n.mu.Lock()
	n.digest = d
	n.mu.Unlock()
	_ = n.useControlPlane(d)
	n.gossipJoin(d)
}

// checkReady reports not ready while a required role has no live member.
func (n *Node) checkReady() {
	var missing []string
	view := n.agent.Members()
	for _, role := range n.cfg.Roles.GetRequires() {
		found := false
		for _, m := range view {
			if m.State == gossip.StateAlive && slices.Contains(m.Meta.Roles, role) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, role)
		}
	}
	if len(missing) > 0 {
		n.setReady(false, "required roles missing: "+strings.Join(missing, ", "))
		return
	}
	n.setReady(true, "")
}

func (n *Node) setReady(ready bool, reason string) {
	n.mu.Lock()
	changed := n.ready != ready || n.reason != reason
	n.ready, n.reason = ready, reason
	n.mu.Unlock()
	if !changed {
		return
	}
	if ready {
		n.log.Info("ready")
	} else {
		n.log.Warn("not ready", "reason", reason)
	}
	if n.cfg.OnReady != nil {
		n.cfg.OnReady(ready, reason)
	}
}

// View implements GossipView.
func (n *Node) View() map[string]*hivemindv1.GossipView {
	out := map[string]*hivemindv1.GossipView{}
	for name, m := range n.agent.Members() {
		g := &hivemindv1.GossipView{
			State:      m.State.String(),
			Address:    m.Addr,
			Generation: m.Meta.Incarnation,
			Roles:      m.Meta.Roles,
			Epoch:      m.Meta.Epoch,
		}
		if !m.LastContact.IsZero() {
			g.LastContact = timestamppb.New(m.LastContact)
			g.Rtt = durationpb.New(m.RTT)
		}
		out[name] = g
	}
	return out
}
