package replica

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// Send implements raftv1.RaftServer.
func (s *RaftService) Send(stream raftv1.Raft_SendServer) error {
	return s.r.node.ServeSend(stream)
}

// Forward implements raftv1.RaftServer: the leader proposes a follower's
// command. A member that is no longer the leader says so, and the follower
// reports UNAVAILABLE so its client retries.
func (s *RaftService) Forward(ctx context.Context, req *raftv1.ForwardRequest) (*raftv1.ForwardResponse, error) {
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
