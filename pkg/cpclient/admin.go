package cpclient

import (
	"context"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Compact drops history before req.Revision and advances the epoch.
func (c *Client) Compact(ctx context.Context, req *hivemindv1.CompactRequest) (*hivemindv1.CompactResponse, error) {
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.CompactResponse, error) {
		return api.Compact(ctx, req, c.cfg.CallOptions...)
	})
}

// MemberList lists the control-plane voters and learners.
func (c *Client) MemberList(ctx context.Context) (*hivemindv1.MemberListResponse, error) {
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.MemberListResponse, error) {
		return api.MemberList(ctx, &hivemindv1.MemberListRequest{}, c.cfg.CallOptions...)
	})
}

// MemberAdd adds a control-plane node as a learner.
func (c *Client) MemberAdd(ctx context.Context, req *hivemindv1.MemberAddRequest) (*hivemindv1.MemberAddResponse, error) {
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.MemberAddResponse, error) {
		return api.MemberAdd(ctx, req, c.cfg.CallOptions...)
	})
}

// MemberRemove removes a control-plane node from raft.
func (c *Client) MemberRemove(ctx context.Context, req *hivemindv1.MemberRemoveRequest) (*hivemindv1.MemberRemoveResponse, error) {
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.MemberRemoveResponse, error) {
		return api.MemberRemove(ctx, req, c.cfg.CallOptions...)
	})
}
