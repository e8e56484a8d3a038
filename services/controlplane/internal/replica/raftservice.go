package replica

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
)

// RaftService serves hivemind.raft.v1.Raft: raft messages from peers, and
// commands that followers forward to the leader.
type RaftService struct {
	raftv1.UnimplementedRaftServer
	r *Replica
}

// RaftService returns the peer-facing service of this member.
func (r *Replica) RaftService() *RaftService { return &RaftService{r: r} }

// Send implements raftv1.RaftServer: raft messages only from control-plane
// members (voters and learners), each sent as the authenticated member.
func (s *RaftService) Send(stream raftv1.Raft_SendServer) error {
	from, err := s.peer(stream.Context())
	if err != nil {
		return err
	}
	return s.r.node.ServeSend(stream, from)
}

// Forward implements raftv1.RaftServer: the leader proposes a follower's
// command. A member that is no longer the leader says so, and the follower
// reports UNAVAILABLE so its client retries. Only control-plane members
// forward: a command is applied as it comes, so no one else may send one.
func (s *RaftService) Forward(ctx context.Context, req *raftv1.ForwardRequest) (*raftv1.ForwardResponse, error) {
	if _, err := s.peer(ctx); err != nil {
		return nil, err
	}
	if !s.r.node.IsLeader() {
		return nil, status.Error(codes.Unavailable, "not the leader")
	}
	res, err := s.r.Propose(ctx, req.GetCommand())
	if err != nil {
		code := codes.Internal
		switch {
		case errors.Is(err, ErrNoQuorum), errors.Is(err, ErrUnavailable):
			code = codes.Unavailable
		case errors.Is(err, context.DeadlineExceeded):
			code = codes.DeadlineExceeded
		case errors.Is(err, context.Canceled):
			code = codes.Canceled
		}
		return nil, status.Error(code, err.Error())
	}
	return &raftv1.ForwardResponse{Result: res}, nil
}

// peer returns the raft id of the caller, which must be a control-plane
// member by its authenticated name: a voter or learner this member knows,
// or one of the configured initial members. A member that knows none yet
// (started with --join, waiting for the leader's snapshot) takes any node
// that proved the cluster secret: the window docs/security.md describes.
// 0 means the server does not authenticate (in-process tests).
func (s *RaftService) peer(ctx context.Context) (uint64, error) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return 0, nil
	}
	if id.Kind != auth.KindNode || !s.r.IsPeer(id.Name) {
		return 0, status.Errorf(codes.PermissionDenied, "raft traffic is for control-plane members only; %s %s is not a voter or learner of this cluster", id.Kind, id.Name)
	}
	return MemberID(id.Name), nil
}
