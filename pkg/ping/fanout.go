package ping

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
)

// Limits of a ping or probe request.
const (
	DefaultCount   = 3
	MaxCount       = 100
	DefaultTimeout = 2 * time.Second
	MaxTimeout     = 30 * time.Second
)

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func requestTimeout(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return DefaultTimeout, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid("timeout: %v", err)
	}
	t := d.AsDuration()
	switch {
	case t <= 0:
		return 0, invalid("timeout: must be positive, got %v", t)
	case t > MaxTimeout:
		return 0, invalid("timeout: at most %v, got %v", MaxTimeout, t)
	}
	return t, nil
}

// target finds the target in the view.
func target(view map[string]gossip.Member, name string) (gossip.Member, error) {
	if name == "" {
		return gossip.Member{}, invalid("target: required")
	}
	m, ok := view[name]
	if !ok {
		return m, status.Errorf(codes.NotFound, "target: no member named %q", name)
	}
	if m.Meta.GRPCAddr == "" {
		return m, status.Errorf(codes.FailedPrecondition, "target: %s announces no gRPC address", name)
	}
	return m, nil
}

// selectMembers picks the members that measure: those the selector names
// (in any state, since the caller asked for them), else every alive member
// but the target; in both cases only those performing one of the
// selector's roles, when it names any.
func selectMembers(view map[string]gossip.Member, targetName string, sel *hivemindv1.Selector) ([]gossip.Member, error) {
	var out []gossip.Member
	roleOK := func(m gossip.Member) bool {
		if len(sel.GetRoles()) == 0 {
			return true
		}
		for _, r := range sel.GetRoles() {
			if slices.Contains(m.Meta.Roles, r) {
				return true
			}
		}
		return false
	}
	if names := sel.GetNodes(); len(names) > 0 {
		seen := map[string]bool{}
		for _, n := range names {
			m, ok := view[n]
			if !ok {
				return nil, status.Errorf(codes.NotFound, "selector.nodes: no member named %q", n)
			}
			if !seen[n] && roleOK(m) {
				seen[n] = true
				out = append(out, m)
			}
		}
	} else {
		for _, m := range view {
			if m.Name != targetName && m.State == gossip.StateAlive && roleOK(m) {
				out = append(out, m)
			}
		}
	}
	if len(out) == 0 {
		return nil, status.Error(codes.NotFound, "selector: no member matches")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// onlySelf reports whether this node is the only member selected: then it
// measures instead of fanning out.
func (s *Service) onlySelf(sel *hivemindv1.Selector) bool {
	n := sel.GetNodes()
	return len(n) == 1 && n[0] == s.cfg.Name && len(sel.GetRoles()) == 0
}

// fanOut runs measure for every member at once (local for this node,
// remote for the others, bounded by timeout) and sends each result as it
// arrives; members that have not answered when the timeout passes are sent
// as missing(name, nil), those that failed as missing(name, err).
func fanOut[R any](
	ctx context.Context, s *Service, members []gossip.Member, timeout time.Duration,
	local func(ctx context.Context) R,
	remote func(ctx context.Context, conn *grpc.ClientConn, name string) (R, error),
	missing func(name string, err error) R,
	send func(R) error,
) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type answer struct {
		name string
		r    R
	}
	answers := make(chan answer, len(members))
	for _, m := range members {
		go func() {
			if m.Name == s.cfg.Name {
				answers <- answer{m.Name, local(ctx)}
				return
			}
			conn, err := s.conn(m.Meta.GRPCAddr)
			var r R
			if err == nil {
				r, err = remote(ctx, conn, m.Name)
			}
			if err != nil {
				if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
					err = nil // timed out, reported below
				}
				r = missing(m.Name, err)
			}
			answers <- answer{m.Name, r}
		}()
	}
	pending := map[string]bool{}
	for _, m := range members {
		pending[m.Name] = true
	}
	for len(pending) > 0 {
		select {
		case a := <-answers:
			delete(pending, a.name)
			if err := send(a.r); err != nil {
				return err
			}
		case <-ctx.Done():
			names := make([]string, 0, len(pending))
			for n := range pending {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				if err := send(missing(n, nil)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return nil
}

// remoteBudget is the part of a member's timeout it may spend measuring,
// leaving the rest for the call that carries its answer back.
func remoteBudget(timeout time.Duration) time.Duration { return timeout * 3 / 4 }

// PingRequest implements hivemindv1.NodeServer.
func (s *Service) PingRequest(req *hivemindv1.PingRequestRequest, stream grpc.ServerStreamingServer[hivemindv1.PingRequestResponse]) error {
	count := req.GetCount()
	switch {
	case count == 0:
		count = DefaultCount
	case count > MaxCount:
		return invalid("count: at most %d, got %d", MaxCount, count)
	}
	timeout, err := requestTimeout(req.GetTimeout())
	if err != nil {
		return err
	}
	v, err := s.view()
	if err != nil {
		return err
	}
	view := v.Members()
	tgt, err := target(view, req.GetTarget())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	if s.onlySelf(req.GetSelector()) {
		mctx, cancel := context.WithTimeout(ctx, remoteBudget(timeout))
		defer cancel()
		return stream.Send(s.measure(mctx, tgt, count))
	}
	members, err := selectMembers(view, tgt.Name, req.GetSelector())
	if err != nil {
		return err
	}
	return fanOut(ctx, s, members, timeout,
		func(ctx context.Context) *hivemindv1.PingRequestResponse {
			mctx, cancel := context.WithTimeout(ctx, remoteBudget(timeout))
			defer cancel()
			return s.measure(mctx, tgt, count)
		},
		func(ctx context.Context, conn *grpc.ClientConn, name string) (*hivemindv1.PingRequestResponse, error) {
			st, err := hivemindv1.NewNodeClient(conn).PingRequest(ctx, &hivemindv1.PingRequestRequest{
				Target: tgt.Name, Selector: &hivemindv1.Selector{Nodes: []string{name}},
				Count: count, Timeout: durationpb.New(timeout),
			}, grpc.WaitForReady(true))
			if err != nil {
				return nil, err
			}
			r, err := st.Recv()
			if err != nil {
				return nil, err
			}
			r.Node = name // the answer is about the member we asked
			return r, nil
		},
		func(name string, err error) *hivemindv1.PingRequestResponse {
			r := &hivemindv1.PingRequestResponse{Node: name, Target: tgt.Name, TimedOut: err == nil}
			if err != nil {
				r.Error = err.Error()
			} else {
				r.Error = fmt.Sprintf("no answer within %v", timeout)
			}
			return r
		},
		stream.Send)
}

// ProbeRequest implements hivemindv1.NodeServer.
func (s *Service) ProbeRequest(req *hivemindv1.ProbeRequestRequest, stream grpc.ServerStreamingServer[hivemindv1.ProbeRequestResponse]) error {
	if req.GetProbe() == "" {
		return invalid("probe: required")
	}
	if !builtin(req.GetProbe()) {
		// A member calls the probe as itself, and nodes do not carry an
		// admin's authority.
		return status.Errorf(codes.PermissionDenied, "probe: %q is not built in; exec probes run only when an admin calls Node/Probe on the target itself", req.GetProbe())
	}
	timeout, err := requestTimeout(req.GetTimeout())
	if err != nil {
		return err
	}
	v, err := s.view()
	if err != nil {
		return err
	}
	view := v.Members()
	tgt, err := target(view, req.GetTarget())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	probeOne := func(ctx context.Context) *hivemindv1.ProbeRequestResponse {
		mctx, cancel := context.WithTimeout(ctx, remoteBudget(timeout))
		defer cancel()
		return s.probeTarget(mctx, tgt, req.GetProbe(), req.GetArgs())
	}
	if s.onlySelf(req.GetSelector()) {
		return stream.Send(probeOne(ctx))
	}
	members, err := selectMembers(view, tgt.Name, req.GetSelector())
	if err != nil {
		return err
	}
	return fanOut(ctx, s, members, timeout, probeOne,
		func(ctx context.Context, conn *grpc.ClientConn, name string) (*hivemindv1.ProbeRequestResponse, error) {
			st, err := hivemindv1.NewNodeClient(conn).ProbeRequest(ctx, &hivemindv1.ProbeRequestRequest{
				Target: tgt.Name, Probe: req.GetProbe(), Args: req.GetArgs(),
				Selector: &hivemindv1.Selector{Nodes: []string{name}}, Timeout: durationpb.New(timeout),
			}, grpc.WaitForReady(true))
			if err != nil {
				return nil, err
			}
			r, err := st.Recv()
			if err != nil {
				return nil, err
			}
			r.Node = name
			return r, nil
		},
		func(name string, err error) *hivemindv1.ProbeRequestResponse {
			r := &hivemindv1.ProbeRequestResponse{Node: name, Target: tgt.Name, TimedOut: err == nil}
			if err != nil {
				r.Error = err.Error()
			} else {
				r.Error = fmt.Sprintf("no answer within %v", timeout)
			}
			return r
		},
		stream.Send)
}

// errText is an error for a result: the status message when there is one.
func errText(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer in time"
	}
	return err.Error()
}
