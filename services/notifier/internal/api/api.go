// Package api serves hivemind.v1.Notifier: subscriptions and their
// deliveries, on any notifier replica. Status codes are chosen here; the
// subscription store and the senders return plain errors.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// Config configures a Server.
type Config struct {
	// Name is this replica's node name, shown in test attempts.
	Name string
	// Store returns the subscription store, or nil until the node has
	// joined and can reach the control plane.
	Store    func() *subscription.Store
	Compiler *filter.Compiler
	// Channels validate targets and send TestSubscription's one attempt
	// (their senders make a single attempt).
	Channels *delivery.Channels
}

// Server implements hivemind.v1.Notifier.
type Server struct {
	hivemindv1.UnimplementedNotifierServer
	cfg Config
}

// New returns a Server.
func New(cfg Config) *Server { return &Server{cfg: cfg} }

// Register serves s on r and gives every method its rule: reads need
// read, changes and test sends need write (and a filter, the filter
// scope, checked per request).
func (s *Server) Register(r grpc.ServiceRegistrar, p *auth.Policy) {
	for m, req := range map[string]auth.Requirement{
		hivemindv1.Notifier_GetSubscription_FullMethodName:    auth.NeedRead,
		hivemindv1.Notifier_ListSubscriptions_FullMethodName:  auth.NeedRead,
		hivemindv1.Notifier_ListDeliveries_FullMethodName:     auth.NeedRead,
		hivemindv1.Notifier_CreateSubscription_FullMethodName: auth.NeedWrite,
		hivemindv1.Notifier_DeleteSubscription_FullMethodName: auth.NeedWrite,
		hivemindv1.Notifier_TestSubscription_FullMethodName:   auth.NeedWrite,
	} {
		p.Set(m, req)
	}
	hivemindv1.RegisterNotifierServer(r, s)
}

func (s *Server) store() (*subscription.Store, error) {
	st := s.cfg.Store()
	if st == nil {
		return nil, status.Error(codes.Unavailable, "this notifier has not joined the cluster yet")
	}
	return st, nil
}

// toStatus chooses the status code of an error from below.
func toStatus(err error) error {
	var fe *subscription.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return status.Errorf(codes.InvalidArgument, "invalid %s: %s", fe.Field, fe.Reason)
	case errors.Is(err, subscription.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, subscription.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err // the control plane's own answer, e.g. UNAVAILABLE without quorum
	}
	return status.Error(codes.Internal, err.Error())
}

// shown is sub as the caller may see it: the signing secret only for an
// admin. Whoever creates a subscription sees its secret once, in
// CreateSubscription's answer; after that a leaked read or write token
// does not reveal it, so it cannot be used to forge deliveries.
func shown(ctx context.Context, sub *hivemindv1.Subscription) *hivemindv1.Subscription {
	if id, ok := auth.FromContext(ctx); ok && id.Has(auth.ScopeAdmin) {
		return sub
	}
	out := proto.Clone(sub).(*hivemindv1.Subscription)
	out.Secret = ""
	return out
}

// CreateSubscription validates and stores a subscription.
func (s *Server) CreateSubscription(ctx context.Context, req *hivemindv1.CreateSubscriptionRequest) (*hivemindv1.CreateSubscriptionResponse, error) {
	sub := proto.Clone(req.GetSubscription()).(*hivemindv1.Subscription)
	if sub == nil {
		sub = &hivemindv1.Subscription{}
	}
	if sub.GetFilter() != "" {
		// Before compiling: an expression from a caller without the
		// scope is not worth the CPU.
		if err := auth.Require(ctx, auth.ScopeFilter); err != nil {
			return nil, err
		}
	}
	if _, err := subscription.Validate(sub, s.cfg.Compiler, s.cfg.Channels); err != nil {
		return nil, toStatus(err)
	}
	if sub.GetDisabled() || sub.GetDisabledReason() != "" || sub.GetCreatedAt() != nil {
		return nil, status.Error(codes.InvalidArgument, "invalid subscription: disabled, disabled_reason and created_at are set by the notifier")
	}
	ch, err := s.cfg.Channels.For(sub.GetTarget())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid subscription: target: %v", err)
	}
	if err := ch.Ready(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v, so it cannot deliver to %s: targets", err, delivery.Scheme(sub.GetTarget()))
	}
	if sub.GetSecret() == "" {
		sub.Secret = ch.NewSecret()
	}
	sub.CreatedAt = timestamppb.Now()
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	rev, err := st.Create(ctx, sub)
	if err != nil {
		return nil, toStatus(err)
	}
	return &hivemindv1.CreateSubscriptionResponse{Subscription: sub, Revision: rev}, nil
}

// GetSubscription returns one subscription; its secret only to an admin.
func (s *Server) GetSubscription(ctx context.Context, req *hivemindv1.GetSubscriptionRequest) (*hivemindv1.GetSubscriptionResponse, error) {
	if err := subscription.ValidateName(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	sub, _, err := st.Get(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &hivemindv1.GetSubscriptionResponse{Subscription: shown(ctx, sub)}, nil
}

// ListSubscriptions returns every subscription; secrets only to an admin.
func (s *Server) ListSubscriptions(ctx context.Context, _ *hivemindv1.ListSubscriptionsRequest) (*hivemindv1.ListSubscriptionsResponse, error) {
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	subs, _, _, err := st.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &hivemindv1.ListSubscriptionsResponse{}
	for _, sub := range subs {
		out.Subscriptions = append(out.Subscriptions, shown(ctx, sub))
	}
	return out, nil
}

// DeleteSubscription removes a subscription and its delivery records.
func (s *Server) DeleteSubscription(ctx context.Context, req *hivemindv1.DeleteSubscriptionRequest) (*hivemindv1.DeleteSubscriptionResponse, error) {
	if err := subscription.ValidateName(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	rev, err := st.Delete(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &hivemindv1.DeleteSubscriptionResponse{Revision: rev}, nil
}

// ListDeliveries returns a subscription's deliveries, newest first.
func (s *Server) ListDeliveries(ctx context.Context, req *hivemindv1.ListDeliveriesRequest) (*hivemindv1.ListDeliveriesResponse, error) {
	if err := subscription.ValidateName(req.GetSubscription()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid subscription: %v", err)
	}
	limit := int(req.GetLimit())
	if limit < 0 || limit > 10000 {
		return nil, status.Error(codes.InvalidArgument, "invalid limit: must be between 0 and 10000")
	}
	if limit == 0 {
		limit = 100
	}
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	if _, _, err := st.Get(ctx, req.GetSubscription()); err != nil {
		return nil, toStatus(err)
	}
	ds, err := st.ListDeliveries(ctx, req.GetSubscription(), limit)
	if err != nil {
		return nil, toStatus(err)
	}
	return &hivemindv1.ListDeliveriesResponse{Deliveries: ds}, nil
}

// TestSubscription sends a synthetic event to the subscription's target
// now, with one attempt, and reports it. It is not recorded and claims
// nothing: it is a probe of the target, not a delivery of an event.
func (s *Server) TestSubscription(ctx context.Context, req *hivemindv1.TestSubscriptionRequest) (*hivemindv1.TestSubscriptionResponse, error) {
	if err := subscription.ValidateName(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	sub, _, err := st.Get(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	var nonce [10]byte
	_, _ = rand.Read(nonce[:])
	now := time.Now()
	ev := delivery.Event{
		ID: "test-" + hex.EncodeToString(nonce[:]), Type: "notifier.test", Hook: delivery.HookModify,
		URI: subscription.Key(sub.GetName()), Source: s.cfg.Name, Time: now,
		Payload: []byte(`{"test":true}`),
	}
	var attempts []*hivemindv1.DeliveryAttempt
	observe := func(a delivery.Attempt) {
		pa := &hivemindv1.DeliveryAttempt{At: timestamppb.New(a.Start), StatusCode: int32(a.StatusCode), Latency: durationpb.New(a.Latency), Notifier: s.cfg.Name}
		if a.Err != nil {
			pa.Error = a.Err.Error()
		}
		attempts = append(attempts, pa)
	}
	id := delivery.ID(sub.GetName(), ev.ID)
	ch, err := s.cfg.Channels.For(sub.GetTarget())
	if err == nil {
		err = ch.ValidateTarget(sub.GetTarget())
	}
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "stored target: %v", err)
	}
	if err := ch.Ready(); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	res, err := ch.Deliver(ctx, delivery.Delivery{
		ID: id, Subscription: sub.GetName(), Target: sub.GetTarget(), Secret: sub.GetSecret(),
		Opaque: sub.GetOpaque(), Capability: sub.GetCapability(), Events: []delivery.Event{ev},
	}, observe)
	if err != nil {
		return nil, toStatus(err)
	}
	return &hivemindv1.TestSubscriptionResponse{Delivery: &hivemindv1.Delivery{
		Id: id, Subscription: sub.GetName(), EventId: ev.ID, State: string(res.State), Attempts: attempts, CompletedAt: timestamppb.Now(),
	}}, nil
}
