// Package hostapi is the hivemind.v1.Host gRPC service: the edge where the
// agent's and the announcement registry's errors become status codes. Bad
// input is INVALID_ARGUMENT naming each field (with a BadRequest detail);
// an unknown service or check is NOT_FOUND; a node that has not joined yet
// answers announcement calls with UNAVAILABLE.
package hostapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/host/internal/agent"
	"github.com/hivemind/hivemind/services/host/internal/announce"
	"github.com/hivemind/hivemind/services/host/internal/check"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
	"github.com/hivemind/hivemind/services/host/internal/record"
)

// MaxOutput bounds UpdateTTL's output; the check keeps at most its own
// limit of it (check.DefaultMaxOutput).
const MaxOutput = 64 << 10

// Agent is what the service asks of the host agent.
type Agent interface {
	Record() *hivemindv1.HostRecord
	UpdateTTL(serviceID, checkName string, st check.Status, output string) (*hivemindv1.CheckState, error)
	Reload() (*hivemindv1.HostRecord, bool, error)
}

// Server implements hivemind.v1.Host.
type Server struct {
	hivemindv1.UnimplementedHostServer
	Agent    Agent
	Registry *announce.Registry
}

// Rules are the service's authorization rules: reads need read, changes
// need write.
func Rules() map[string]auth.Requirement {
	return map[string]auth.Requirement{
		hivemindv1.Host_GetHost_FullMethodName:      auth.NeedRead,
		hivemindv1.Host_ListServices_FullMethodName: auth.NeedRead,
		hivemindv1.Host_Discover_FullMethodName:     auth.NeedRead,
		hivemindv1.Host_WatchService_FullMethodName: auth.NeedRead,
		hivemindv1.Host_UpdateTTL_FullMethodName:    auth.NeedWrite,
		hivemindv1.Host_Reload_FullMethodName:       auth.NeedWrite,
		hivemindv1.Host_Announce_FullMethodName:     auth.NeedWrite,
		hivemindv1.Host_Withdraw_FullMethodName:     auth.NeedWrite,
	}
}

// Register serves s on srv and gives its methods their rules.
func Register(srv *grpc.Server, policy *auth.Policy, s *Server) {
	for m, r := range Rules() {
		policy.Set(m, r)
	}
	hivemindv1.RegisterHostServer(srv, s)
}

// GetHost implements hivemind.v1.Host.
func (s *Server) GetHost(context.Context, *hivemindv1.GetHostRequest) (*hivemindv1.GetHostResponse, error) {
	r := s.Agent.Record()
	if r == nil {
		return nil, status.Error(codes.Unavailable, "the agent has not built its record yet")
	}
	return &hivemindv1.GetHostResponse{Host: r}, nil
}

// ListServices implements hivemind.v1.Host.
func (s *Server) ListServices(context.Context, *hivemindv1.ListServicesRequest) (*hivemindv1.ListServicesResponse, error) {
	return &hivemindv1.ListServicesResponse{Services: s.Agent.Record().GetServices()}, nil
}

// UpdateTTL implements hivemind.v1.Host.
func (s *Server) UpdateTTL(_ context.Context, req *hivemindv1.UpdateTTLRequest) (*hivemindv1.UpdateTTLResponse, error) {
	var f hostconfig.Fields
	if req.GetServiceId() == "" {
		f.Add("service_id", "required")
	}
	st := record.FromStatus(req.GetStatus())
	if st == 0 {
		f.Add("status", "must be HEALTH_STATUS_PASSING, HEALTH_STATUS_WARNING or HEALTH_STATUS_CRITICAL, got %s", req.GetStatus())
	}
	if len(req.GetOutput()) > MaxOutput {
		f.Add("output", "%d bytes, at most %d", len(req.GetOutput()), MaxOutput)
	}
	if err := f.Err(); err != nil {
		return nil, invalid(err)
	}
	c, err := s.Agent.UpdateTTL(req.GetServiceId(), req.GetCheck(), st, req.GetOutput())
	switch {
	case err == nil:
		return &hivemindv1.UpdateTTLResponse{Check: c}, nil
	case errors.Is(err, check.ErrUnknownService):
		return nil, status.Errorf(codes.NotFound, "service_id: no service %q on this host", req.GetServiceId())
	case errors.Is(err, check.ErrUnknownCheck):
		return nil, status.Errorf(codes.NotFound, "check: service %q has no check %q", req.GetServiceId(), req.GetCheck())
	case errors.Is(err, check.ErrNotTTL):
		return nil, invalid(&hostconfig.FieldError{Path: "check", Msg: fmt.Sprintf("%q of service %q is not a TTL check", req.GetCheck(), req.GetServiceId())})
	case errors.Is(err, agent.ErrCheckNotNamed):
		return nil, invalid(&hostconfig.FieldError{Path: "check", Msg: fmt.Sprintf("required: service %q does not have exactly one TTL check", req.GetServiceId())})
	case errors.Is(err, check.ErrStopped):
		return nil, status.Error(codes.Unavailable, "the agent is stopping")
	}
	return nil, status.Error(codes.Internal, err.Error())
}

// Reload implements hivemind.v1.Host.
func (s *Server) Reload(context.Context, *hivemindv1.ReloadRequest) (*hivemindv1.ReloadResponse, error) {
	r, _, err := s.Agent.Reload()
	if err != nil {
		var fe *hostconfig.FieldError
		if errors.As(err, &fe) {
			return nil, invalid(err)
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, status.Errorf(codes.FailedPrecondition, "configuration file: %v", err)
		}
		return nil, status.Errorf(codes.InvalidArgument, "configuration file: %v", err)
	}
	return &hivemindv1.ReloadResponse{Services: r.GetServices()}, nil
}

// Announce implements hivemind.v1.Host.
func (s *Server) Announce(ctx context.Context, req *hivemindv1.AnnounceRequest) (*hivemindv1.AnnounceResponse, error) {
	a, rev, err := s.Registry.Announce(ctx, req.GetAnnouncement())
	if err != nil {
		return nil, registryError(err)
	}
	return &hivemindv1.AnnounceResponse{Announcement: a, Revision: rev}, nil
}

// Withdraw implements hivemind.v1.Host.
func (s *Server) Withdraw(ctx context.Context, req *hivemindv1.WithdrawRequest) (*hivemindv1.WithdrawResponse, error) {
	rev, err := s.Registry.Withdraw(ctx, req.GetService(), req.GetInstance())
	if err != nil {
		return nil, registryError(err)
	}
	return &hivemindv1.WithdrawResponse{Revision: rev}, nil
}

// Discover implements hivemind.v1.Host.
func (s *Server) Discover(ctx context.Context, req *hivemindv1.DiscoverRequest) (*hivemindv1.DiscoverResponse, error) {
	as, rev, err := s.Registry.Discover(ctx, req.GetService())
	if err != nil {
		return nil, registryError(err)
	}
	return &hivemindv1.DiscoverResponse{Instances: as, Revision: rev}, nil
}

// WatchService implements hivemind.v1.Host.
func (s *Server) WatchService(req *hivemindv1.WatchServiceRequest, stream hivemindv1.Host_WatchServiceServer) error {
	err := s.Registry.Watch(stream.Context(), req.GetService(), func(as []*hivemindv1.Announcement, rev int64) error {
		return stream.Send(&hivemindv1.WatchServiceResponse{Instances: as, Revision: rev})
	})
	if err == nil || stream.Context().Err() != nil {
		return nil
	}
	return registryError(err)
}

func registryError(err error) error {
	var fe *hostconfig.FieldError
	switch {
	case errors.As(err, &fe):
		return invalid(err)
	case errors.Is(err, announce.ErrNotFound):
		return status.Error(codes.NotFound, trimPkg(err))
	case errors.Is(err, announce.ErrNotJoined):
		return status.Error(codes.Unavailable, trimPkg(err))
	}
	if _, ok := status.FromError(err); ok {
		return err // the control plane's own status (UNAVAILABLE when degraded)
	}
	return status.Error(codes.Internal, err.Error())
}

// invalid is INVALID_ARGUMENT listing every field error in err, in the
// message and as a BadRequest detail.
func invalid(err error) error {
	var fields []*hostconfig.FieldError
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*hostconfig.FieldError); ok {
			fields = append(fields, fe)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if u := errors.Unwrap(e); u != nil {
			walk(u)
		}
	}
	walk(err)
	if len(fields) == 0 {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	msgs := make([]string, len(fields))
	br := &errdetails.BadRequest{}
	for i, fe := range fields {
		msgs[i] = fe.Error()
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: fe.Path, Description: fe.Msg})
	}
	st := status.New(codes.InvalidArgument, strings.Join(msgs, "; "))
	if d, derr := st.WithDetails(br); derr == nil {
		st = d
	}
	return st.Err()
}

// trimPkg drops the "pkg: " prefix of an internal error message.
func trimPkg(err error) string {
	msg := err.Error()
	for _, p := range []string{"check: ", "agent: ", "announce: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}
