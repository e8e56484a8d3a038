package cluster

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// nodeRegistry is the registry as the node's own Membership service sees
// it: unavailable until the node has joined (except on the control
// plane, whose registry is local).
type nodeRegistry Node

func (r *nodeRegistry) get() (Registry, error) {
	n := (*Node)(r)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.registry == nil {
		return nil, status.Error(codes.Unavailable, "this node has not joined the cluster yet; ask another member")
	}
	return n.registry, nil
}

func (r *nodeRegistry) Join(ctx context.Context, req *hivemindv1.JoinRequest) (*hivemindv1.JoinResponse, error) {
	reg, err := r.get()
	if err != nil {
		return nil, err
	}
	return reg.Join(ctx, req)
}

func (r *nodeRegistry) Leave(ctx context.Context, req *hivemindv1.LeaveRequest) (*hivemindv1.LeaveResponse, error) {
	reg, err := r.get()
	if err != nil {
		return nil, err
	}
	return reg.Leave(ctx, req)
}

func (r *nodeRegistry) List(ctx context.Context, stale bool) (*hivemindv1.MembershipDigest, error) {
	reg, err := r.get()
	if err != nil {
		return nil, err
	}
	return reg.List(ctx, stale)
}

func (r *nodeRegistry) Watch(ctx context.Context, start int64, fn func([]*hivemindv1.MemberEvent) error) error {
	reg, err := r.get()
	if err != nil {
		return err
	}
	return reg.Watch(ctx, start, fn)
}
