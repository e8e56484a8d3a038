// Package members is the control plane's side of cluster membership: the
// registry as the local replica holds it (joins and leaves committed
// through raft, tickets signed on admission) and the leader's reconciler,
// the one door through which gossip reaches the registry.
package members

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cluster"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
	"github.com/hivemind/hivemind/pkg/ticket"
	"github.com/hivemind/hivemind/services/controlplane/internal/api"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
	"github.com/hivemind/hivemind/services/controlplane/internal/watch"
)

// Store is what the registry needs from the replica.
type Store interface {
	Propose(ctx context.Context, cmd *raftv1.Command) (*raftv1.Result, error)
	ReadIndex(ctx context.Context) error
	Machine() *fsm.Machine
	Name() string
}

// Local is the registry on a control-plane node.
type Local struct {
	Store Store
	Hub   *watch.Hub
	// Key is this member's node key; it signs the admission tickets this
	// member issues.
	Key auth.NodeKey
	// Now stamps tickets; nil means time.Now.
	Now func() time.Time
}

var _ cluster.Registry = (*Local)(nil)

// Join implements cluster.Registry: the join is committed through raft,
// so a quorum approves it or nothing does.
func (l *Local) Join(ctx context.Context, req *hivemindv1.JoinRequest) (*hivemindv1.JoinResponse, error) {
	res, err := api.Propose(ctx, l.Store, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Source: req.GetName(), Op: &raftv1.Command_MemberJoin{MemberJoin: req}})
	if err != nil {
		return nil, err
	}
	m := l.Store.Machine()
	// Tickets are checked with the issuer's key in the registry: this
	// member issues only once its own join has bound its key.
	if self, ok := m.Member(l.Store.Name()); !ok || !registry.Performs(self, cluster.RoleControlPlane) || !auth.SameKey(self.GetPublicKey(), l.Key.Public()) {
		return nil, status.Errorf(codes.Unavailable, "join of %s committed, but %s has not joined the registry with its key yet and cannot sign the ticket; retry (another member, or shortly)", req.GetName(), l.Store.Name())
	}
	members, rev := m.Members()
	epoch := m.Epoch()
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	tk, err := ticket.Sign(l.Key.Sign, ticket.Ticket{
		Name: req.GetName(), Issuer: l.Store.Name(), Epoch: epoch, Incarnation: res.GetMember().GetIncarnation(), Revision: res.GetRevision(), IssuedAt: now(),
	})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid name: %v", err)
	}
	return &hivemindv1.JoinResponse{
		Digest:     &hivemindv1.MembershipDigest{Members: members, Epoch: epoch, Revision: rev},
		Ticket:     tk,
		AnsweredBy: l.Store.Name(),
	}, nil
}

// Leave implements cluster.Registry.
func (l *Local) Leave(ctx context.Context, req *hivemindv1.LeaveRequest) (*hivemindv1.LeaveResponse, error) {
	res, err := api.Propose(ctx, l.Store, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Source: req.GetName(), Op: &raftv1.Command_MemberLeave{MemberLeave: req}})
	if err != nil {
		return nil, err
	}
	return &hivemindv1.LeaveResponse{Revision: res.GetRevision()}, nil
}

// List implements cluster.Registry.
func (l *Local) List(ctx context.Context, stale bool) (*hivemindv1.MembershipDigest, error) {
	if !stale {
		if err := l.Store.ReadIndex(ctx); err != nil {
			return nil, api.ToStatus(err)
		}
	}
	m := l.Store.Machine()
	members, rev := m.Members()
	return &hivemindv1.MembershipDigest{Members: members, Epoch: m.Epoch(), Revision: rev}, nil
}

// Watch implements cluster.Registry.
func (l *Local) Watch(ctx context.Context, start int64, fn func([]*hivemindv1.MemberEvent) error) error {
	req := &hivemindv1.WatchRequest{StartRevision: start, Prefix: registry.Prefix, Types: registry.EventTypes}
	if err := fsm.ValidateWatch(req, l.Store.Machine().Revision()); err != nil {
		return api.ToStatus(err)
	}
	err := l.Hub.Serve(ctx, req, func(resp *hivemindv1.WatchResponse) error {
		evs := cluster.MemberEvents(nil, resp.GetEvents())
		if len(evs) == 0 {
			return nil
		}
		return fn(evs)
	})
	return api.ToStatus(err)
}
