// Package cluster is a role's place in the cluster: the Membership service
// every role serves, the registry it reads (locally on the control plane,
// remotely everywhere else), and the node's own join, ticket and leave.
//
// One door: joins, leaves and state changes are committed by the control
// plane only. A role that is not on the control plane forwards Join and
// Leave there; what every role adds is its own gossip view.
package cluster

import (
	"context"
	"errors"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Registry is the committed member registry, as a role reaches it.
type Registry interface {
	// Join commits a join and returns the digest and ticket.
	Join(ctx context.Context, req *hivemindv1.JoinRequest) (*hivemindv1.JoinResponse, error)
	// Leave commits a leave.
	Leave(ctx context.Context, req *hivemindv1.LeaveRequest) (*hivemindv1.LeaveResponse, error)
	// List returns the registry, linearizable unless stale.
	List(ctx context.Context, stale bool) (*hivemindv1.MembershipDigest, error)
	// Watch calls fn with member events from start on (0: from now), in
	// order, until ctx ends or fn fails.
	Watch(ctx context.Context, start int64, fn func([]*hivemindv1.MemberEvent) error) error
}

// GossipView is this node's gossip view of the cluster, by node name.
// Implementations return a fresh map the caller may keep.
type GossipView interface {
	View() map[string]*hivemindv1.GossipView
}

// Service implements hivemindv1.MembershipServer over a Registry and this
// node's gossip view.
type Service struct {
	hivemindv1.UnimplementedMembershipServer
	// NodeName is this node (answered_by).
	NodeName string
	Registry Registry
	// Gossip may be nil before the node has joined gossip.
	Gossip GossipView
}

// Join implements hivemindv1.MembershipServer. A node joins as itself,
// with the key it proved in its handshake; a member may also pass on
// another node's join (a seed that is not on the control plane does), which
// the control plane accepts only with the joining node's own signature.
func (s *Service) Join(ctx context.Context, req *hivemindv1.JoinRequest) (*hivemindv1.JoinResponse, error) {
	if err := checkJoinCaller(ctx, req); err != nil {
		return nil, err
	}
	if err := auth.VerifyJoin(req); err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "join of %s: %v", req.GetName(), err)
	}
	resp, err := s.Registry.Join(ctx, req)
	return resp, statusOf(err)
}

func checkJoinCaller(ctx context.Context, req *hivemindv1.JoinRequest) error {
	id, ok := auth.FromContext(ctx)
	switch {
	case !ok:
		return nil // a server without authentication (tests)
	case id.Kind != auth.KindNode:
		return status.Errorf(codes.PermissionDenied, "Membership/Join is for nodes; %s %s is not one", id.Kind, id.Name)
	case id.Name == req.GetName():
		if !auth.SameKey(id.Key, req.GetPublicKey()) {
			return status.Errorf(codes.PermissionDenied, "join of %s: public_key is not the key %s proved in its handshake", req.GetName(), id.Name)
		}
		return nil
	case id.Joining:
		return status.Errorf(codes.PermissionDenied, "node %s may join only as itself, not as %s", id.Name, req.GetName())
	}
	return nil // a member passing a signed join on
}

// Leave implements hivemindv1.MembershipServer. A node leaves only for
// itself; an operator with the admin scope removes another node (which
// also releases its name's key binding).
func (s *Service) Leave(ctx context.Context, req *hivemindv1.LeaveRequest) (*hivemindv1.LeaveResponse, error) {
	if id, ok := auth.FromContext(ctx); ok && !id.IsNode(req.GetName()) && !(id.Kind == auth.KindOperator && id.Has(auth.ScopeAdmin)) {
		return nil, status.Errorf(codes.PermissionDenied, "%s %s may not make %s leave: a node leaves only for itself, and removing another needs an operator with the admin scope", id.Kind, id.Name, req.GetName())
	}
	resp, err := s.Registry.Leave(ctx, req)
	return resp, statusOf(err)
}

// ListMembers implements hivemindv1.MembershipServer. When the registry
// cannot be read (no quorum, control plane unreachable) it still answers
// from gossip and says why in registry_error.
func (s *Service) ListMembers(ctx context.Context, req *hivemindv1.ListMembersRequest) (*hivemindv1.ListMembersResponse, error) {
	var gossip map[string]*hivemindv1.GossipView
	if s.Gossip != nil {
		gossip = s.Gossip.View()
	}
	out := &hivemindv1.ListMembersResponse{AnsweredBy: s.NodeName}
	digest, err := s.Registry.List(ctx, req.GetStale())
	if err != nil {
		if ctx.Err() != nil {
			return nil, statusOf(err)
		}
		out.RegistryError = err.Error()
	}
	out.Members, out.Epoch, out.Revision = Merge(digest, gossip), digest.GetEpoch(), digest.GetRevision()
	return out, nil
}

// WatchMembers implements hivemindv1.MembershipServer.
func (s *Service) WatchMembers(req *hivemindv1.WatchMembersRequest, stream hivemindv1.Membership_WatchMembersServer) error {
	if req.GetStartRevision() < 0 {
		return status.Error(codes.InvalidArgument, "invalid start_revision: must not be negative")
	}
	err := s.Registry.Watch(stream.Context(), req.GetStartRevision(), func(evs []*hivemindv1.MemberEvent) error {
		return stream.Send(&hivemindv1.WatchMembersResponse{Events: evs})
	})
	if stream.Context().Err() != nil {
		return nil
	}
	return statusOf(err)
}

// Merge pairs each registry member with its gossip view, in name order.
// Nodes that gossip knows but the registry does not (digest nil or stale)
// are listed with their name only.
func Merge(digest *hivemindv1.MembershipDigest, gossip map[string]*hivemindv1.GossipView) []*hivemindv1.MemberView {
	var out []*hivemindv1.MemberView
	seen := map[string]bool{}
	for _, m := range digest.GetMembers() {
		g := gossip[m.GetName()]
		if g == nil {
			g = &hivemindv1.GossipView{State: "unknown"}
		}
		out = append(out, &hivemindv1.MemberView{Member: m, Gossip: g})
		seen[m.GetName()] = true
	}
	for name, g := range gossip {
		if !seen[name] {
			out = append(out, &hivemindv1.MemberView{Member: &hivemindv1.ClusterMember{Name: name}, Gossip: g})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetMember().GetName() < out[j].GetMember().GetName() })
	return out
}

// statusOf keeps gRPC statuses and maps context errors; anything else is
// an internal error.
func statusOf(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
