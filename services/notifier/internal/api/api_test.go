package api

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
	"github.com/hivemind/hivemind/services/notifier/internal/mail"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
	"github.com/hivemind/hivemind/services/notifier/internal/webhook"
)

// memCP is the part of the control plane the store uses, in memory: enough
// for create-only transactions and reads.
type memCP struct {
	mu  sync.Mutex
	kv  map[string][]byte
	rev int64
}

func (m *memCP) Get(_ context.Context, r *hivemindv1.GetRequest) (*hivemindv1.GetResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.kv[r.GetKey()]
	return &hivemindv1.GetResponse{Found: ok, Kv: &hivemindv1.KeyValue{Key: r.GetKey(), Value: v, Version: 1}, Header: &hivemindv1.ResponseHeader{Revision: m.rev}}, nil
}

func (m *memCP) Range(_ context.Context, r *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := &hivemindv1.RangeResponse{Header: &hivemindv1.ResponseHeader{Revision: m.rev}}
	for k, v := range m.kv {
		if strings.HasPrefix(k, r.GetPrefix()) {
			resp.Kvs = append(resp.Kvs, &hivemindv1.KeyValue{Key: k, Value: v})
		}
	}
	return resp, nil
}

func (m *memCP) Put(_ context.Context, r *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	m.kv[r.GetKey()] = r.GetValue()
	return &hivemindv1.PutResponse{Applied: true}, nil
}

func (m *memCP) Txn(_ context.Context, r *hivemindv1.TxnRequest) (*hivemindv1.TxnResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range r.GetCompares() {
		_, exists := m.kv[c.GetKey()]
		if c.GetTarget() == hivemindv1.Compare_TARGET_VERSION && c.GetResult() == hivemindv1.Compare_RESULT_EQUAL && exists {
			return &hivemindv1.TxnResponse{}, nil
		}
	}
	m.rev++
	for _, op := range r.GetSuccess() {
		if p := op.GetPut(); p != nil {
			m.kv[p.GetKey()] = p.GetValue()
		}
		if d := op.GetDelete(); d != nil {
			delete(m.kv, d.GetKey())
		}
	}
	return &hivemindv1.TxnResponse{Succeeded: true, Header: &hivemindv1.ResponseHeader{Revision: m.rev}}, nil
}

func newServer(t *testing.T) *Server { return newServerOn(t, &memCP{kv: map[string][]byte{}}) }

func newServerOn(t *testing.T, cp *memCP) *Server {
	comp, err := filter.NewCompiler(filter.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	st := subscription.NewStore(cp)
	chans := delivery.NewChannels()
	chans.Register(webhook.NewChannel(webhook.New(webhook.Config{})), "http", "https")
	chans.Register(mail.NewChannel(nil), "mailto") // no relay configured
	return New(Config{Name: "n1", Store: func() *subscription.Store { return st }, Compiler: comp, Channels: chans})
}

var (
	writer   = auth.Identity{Name: "ops", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}}
	filterer = auth.Identity{Name: "ops-f", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeWrite, auth.ScopeFilter}}
)

func TestCreateSubscriptionValidation(t *testing.T) {
	cp := &memCP{kv: map[string][]byte{}}
	s := newServerOn(t, cp)
	ok := func(name string) *hivemindv1.Subscription {
		return &hivemindv1.Subscription{Name: name, Target: "https://hooks.example.com/x", Prefix: "/srv/"}
	}
	with := func(f func(*hivemindv1.Subscription)) *hivemindv1.Subscription {
		sub := ok("web")
		f(sub)
		return sub
	}
	for _, tc := range []struct {
		name string
		id   auth.Identity
		sub  *hivemindv1.Subscription
		code codes.Code
		msg  string // part of the message
	}{
		{"bad name", writer, ok("Web_1"), codes.InvalidArgument, "invalid name"},
		{"empty name", writer, ok(""), codes.InvalidArgument, "invalid name"},
		{"name too long", writer, ok(strings.Repeat("a", 64)), codes.InvalidArgument, "invalid name"},
		{"no target", writer, with(func(s *hivemindv1.Subscription) { s.Target = "" }), codes.InvalidArgument, "invalid target"},
		{"ftp target", writer, with(func(s *hivemindv1.Subscription) { s.Target = "ftp://x/y" }), codes.InvalidArgument, "invalid target"},
		{"bad mailto", writer, with(func(s *hivemindv1.Subscription) { s.Target = "mailto:not an address" }), codes.InvalidArgument, "invalid target"},
		{"bad hook", writer, with(func(s *hivemindv1.Subscription) { s.Hooks = []hivemindv1.Hook{hivemindv1.Hook_HOOK_UNSPECIFIED} }), codes.InvalidArgument, "invalid hooks[0]"},
		{"relative prefix", writer, with(func(s *hivemindv1.Subscription) { s.Prefix = "srv/" }), codes.InvalidArgument, "invalid prefix"},
		{"filter without scope", writer, with(func(s *hivemindv1.Subscription) { s.Filter = `type == "x"` }), codes.PermissionDenied, `"filter" scope`},
		{"filter syntax error", filterer, with(func(s *hivemindv1.Subscription) { s.Filter = `type == ` }), codes.InvalidArgument, "invalid filter: 1:"},
		{"filter not bool", filterer, with(func(s *hivemindv1.Subscription) { s.Filter = `uri + "x"` }), codes.InvalidArgument, "must give bool"},
		{"opaque too long", writer, with(func(s *hivemindv1.Subscription) { s.Opaque = strings.Repeat("x", 5000) }), codes.InvalidArgument, "invalid opaque"},
		{"batch window on webhook", writer, with(func(s *hivemindv1.Subscription) { s.BatchWindow = durationpb.New(time.Minute) }), codes.InvalidArgument, "invalid batch_window"},
		{"mailto without a relay", writer, with(func(s *hivemindv1.Subscription) { s.Target = "mailto:ops@example.com" }), codes.FailedPrecondition, "no SMTP relay configured (--smtp-relay), so it cannot deliver to mailto: targets"},
		{"valid", writer, ok("web"), codes.OK, ""},
		{"duplicate", writer, ok("web"), codes.AlreadyExists, "already exists"},
		{"valid with filter", filterer, with(func(s *hivemindv1.Subscription) { s.Name = "web-f"; s.Filter = `type == "member.failed"` }), codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := auth.NewContext(context.Background(), tc.id)
			resp, err := s.CreateSubscription(ctx, &hivemindv1.CreateSubscriptionRequest{Subscription: tc.sub})
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if err != nil && !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("message %q does not contain %q", status.Convert(err).Message(), tc.msg)
			}
			if err == nil && !strings.HasPrefix(resp.GetSubscription().GetSecret(), "whsec_") {
				t.Fatalf("created without a generated secret: %v", resp)
			}
		})
	}

	// The secret is shown only in the answer to CreateSubscription.
	ctx := auth.NewContext(context.Background(), writer)
	got, err := s.GetSubscription(ctx, &hivemindv1.GetSubscriptionRequest{Name: "web"})
	if err != nil || got.GetSubscription().GetSecret() != "" || got.GetSubscription().GetTarget() == "" {
		t.Fatalf("Get: %v, %v", got, err)
	}
	list, err := s.ListSubscriptions(ctx, &hivemindv1.ListSubscriptionsRequest{})
	if err != nil || len(list.GetSubscriptions()) != 2 {
		t.Fatalf("List: %v, %v", list, err)
	}
	for _, sub := range list.GetSubscriptions() {
		if sub.GetSecret() != "" {
			t.Fatalf("List shows a secret: %v", sub)
		}
	}
	// An admin sees it, and it is stored apart from the record.
	admin := auth.NewContext(context.Background(), auth.Identity{Name: "root", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeAdmin}})
	got, err = s.GetSubscription(admin, &hivemindv1.GetSubscriptionRequest{Name: "web"})
	if err != nil || !strings.HasPrefix(got.GetSubscription().GetSecret(), "whsec_") {
		t.Fatalf("admin Get: %v, %v", got, err)
	}
	list, err = s.ListSubscriptions(admin, &hivemindv1.ListSubscriptionsRequest{})
	if err != nil || len(list.GetSubscriptions()) != 2 || !strings.HasPrefix(list.GetSubscriptions()[0].GetSecret(), "whsec_") {
		t.Fatalf("admin List: %v, %v", list, err)
	}
	rec, err := subscription.Unmarshal(cp.kv[subscription.Key("web")])
	if err != nil || rec.GetSecret() != "" || rec.GetTarget() == "" {
		t.Fatalf("stored record %v (%v), want one without the secret", rec, err)
	}
	if string(cp.kv[subscription.SecretKey("web")]) != got.GetSubscription().GetSecret() {
		t.Fatalf("secret key holds %q, want the subscription's secret", cp.kv[subscription.SecretKey("web")])
	}
	if _, err := s.DeleteSubscription(ctx, &hivemindv1.DeleteSubscriptionRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSubscription(ctx, &hivemindv1.GetSubscriptionRequest{Name: "web"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, ok := cp.kv[subscription.SecretKey("web")]; ok {
		t.Fatal("the secret outlived its subscription")
	}
}

func TestRules(t *testing.T) {
	p := auth.NewPolicy()
	newServer(t).Register(grpcRegistrar{}, p)
	for m, want := range map[string]auth.Requirement{
		hivemindv1.Notifier_GetSubscription_FullMethodName:    auth.NeedRead,
		hivemindv1.Notifier_ListDeliveries_FullMethodName:     auth.NeedRead,
		hivemindv1.Notifier_CreateSubscription_FullMethodName: auth.NeedWrite,
		hivemindv1.Notifier_TestSubscription_FullMethodName:   auth.NeedWrite,
	} {
		if got, _ := p.Lookup(m); got != want {
			t.Errorf("%s: %v, want %v", m, got, want)
		}
	}
}

type grpcRegistrar struct{}

func (grpcRegistrar) RegisterService(*grpc.ServiceDesc, any) {}
