// Package nodeinfo serves hivemind.v1.Node/Info: which role, node, version
// and build is answering, and for how long it has been up.
package nodeinfo

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivemind/hivemind/pkg/buildinfo"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Service implements the Info RPC of hivemindv1.NodeServer.
type Service struct {
	hivemindv1.UnimplementedNodeServer

	Role        string
	NodeName    string
	GRPCAddress string
	Started     time.Time
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Info implements hivemindv1.NodeServer.
func (s *Service) Info(context.Context, *hivemindv1.InfoRequest) (*hivemindv1.InfoResponse, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	b := buildinfo.Get()
	return &hivemindv1.InfoResponse{
		Role:        s.Role,
		NodeName:    s.NodeName,
		Version:     b.Version,
		Build:       &hivemindv1.Build{Commit: b.Commit, GoVersion: b.GoVersion, Time: b.Time},
		Uptime:      durationpb.New(now().Sub(s.Started)),
		StartedAt:   timestamppb.New(s.Started),
		GrpcAddress: s.GRPCAddress,
	}, nil
}
