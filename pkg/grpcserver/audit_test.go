package grpcserver

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/audit"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

type auditCallerKey struct{}

// tokenAuth admits "good" (operator ops), refuses anything else, and
// refuses every call of /audit.Svc/Locked before it is read.
type tokenAuth struct{}

func (tokenAuth) Authenticate(ctx context.Context, method string) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) == 0 || v[0] != "bearer good" || strings.HasSuffix(method, "/Locked") {
		return nil, status.Error(codes.Unauthenticated, "bad token")
	}
	return context.WithValue(ctx, auditCallerKey{}, "operator:ops"), nil
}

func auditDesc() *grpc.ServiceDesc {
	unary := func(name string, h func() error) grpc.MethodDesc {
		return grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			req := &hivemindv1.CreateSubscriptionRequest{}
			if err := dec(req); err != nil {
				return nil, err
			}
			info := &grpc.UnaryServerInfo{FullMethod: "/audit.Svc/" + name}
			return ic(ctx, req, info, func(context.Context, any) (any, error) { return &hivemindv1.InfoResponse{}, h() })
		}}
	}
	return &grpc.ServiceDesc{
		ServiceName: "audit.Svc",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			unary("Read", func() error { return nil }),
			unary("Write", func() error { return nil }),
			unary("WriteFails", func() error { return status.Error(codes.InvalidArgument, "payload: too large") }),
			unary("Forbidden", func() error { return status.Error(codes.PermissionDenied, "uri: another node's") }),
			unary("Locked", func() error { return nil }),
		},
	}
}

// One record per audited or refused call, with the caller, the resource
// named and the code; none for a read that succeeded; never the payload;
// refusals counted by method, made-up methods as "unknown".
func TestAudit(t *testing.T) {
	buf := &syncBuf{}
	reg := prometheus.NewRegistry()
	srv, err := New(Config{
		Addr:       "127.0.0.1:0",
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: reg,
		Auth:       tokenAuth{},
		Audit: Audit{
			Log:    audit.New(buf, "cp1", nil),
			Method: func(m string) bool { return strings.HasPrefix(m, "/audit.Svc/Write") },
			Caller: func(ctx context.Context) string { s, _ := ctx.Value(auditCallerKey{}).(string); return s },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.GRPC().RegisterService(auditDesc(), nil)
	go srv.Serve()
	defer srv.Stop(context.Background())
	conn, err := grpcclient.Dial(srv.Addr(), grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The name is found one level down; the target and secret never.
	req := &hivemindv1.CreateSubscriptionRequest{Subscription: &hivemindv1.Subscription{
		Name: "team-a-hook", Target: "https://hooks.example.com/?token=do-not-log-me", Secret: "whsec_do-not-log-me"}}
	call := func(method, token, rid string) {
		md := metadata.Pairs("authorization", "bearer "+token)
		if rid != "" {
			md.Set("x-request-id", rid)
		}
		_ = conn.Invoke(metadata.NewOutgoingContext(ctx, md), method, req, &hivemindv1.InfoResponse{})
	}
	call("/audit.Svc/Read", "good", "r1")
	call("/audit.Svc/Write", "good", "r2")
	call("/audit.Svc/WriteFails", "good", "r3")
	call("/audit.Svc/Forbidden", "good", "r4")
	call("/audit.Svc/Write", "bad", "r5")
	call("/audit.Svc/Locked", "good", "r6")
	call("/audit.Svc/NoSuchMethod", "bad", "r7")

	want := map[string]audit.Record{
		"r2": {Caller: "operator:ops", Method: "/audit.Svc/Write", Resource: "team-a-hook", Code: "OK"},
		"r3": {Caller: "operator:ops", Method: "/audit.Svc/WriteFails", Resource: "team-a-hook", Code: "InvalidArgument"},
		"r4": {Caller: "operator:ops", Method: "/audit.Svc/Forbidden", Resource: "team-a-hook", Code: "PermissionDenied", Refused: true},
		"r5": {Caller: "anonymous", Method: "/audit.Svc/Write", Code: "Unauthenticated", Refused: true},
		"r6": {Caller: "anonymous", Method: "/audit.Svc/Locked", Code: "Unauthenticated", Refused: true},
		"r7": {Caller: "anonymous", Method: "/audit.Svc/NoSuchMethod", Code: "Unauthenticated", Refused: true},
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d records, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for _, l := range lines {
		var r audit.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("record %q: %v", l, err)
		}
		w, ok := want[r.RequestID]
		if !ok {
			t.Fatalf("unexpected record %s", l)
		}
		delete(want, r.RequestID)
		if r.Caller != w.Caller || r.Method != w.Method || r.Resource != w.Resource || r.Code != w.Code || r.Refused != w.Refused || r.Member != "cp1" || r.Time.IsZero() || r.Peer == "" {
			t.Errorf("record %s, want %+v", l, w)
		}
	}
	if strings.Contains(buf.String(), "do-not-log-me") || strings.Contains(buf.String(), "bad token") || strings.Contains(buf.String(), "another node") {
		t.Errorf("a record holds a payload or an error message:\n%s", buf.String())
	}
	for _, c := range []struct {
		method, code string
	}{{"/audit.Svc/Forbidden", "PermissionDenied"}, {"/audit.Svc/Write", "Unauthenticated"}, {"/audit.Svc/Locked", "Unauthenticated"}, {"unknown", "Unauthenticated"}} {
		if n := testutil.ToFloat64(srv.audit.refusals.WithLabelValues(c.method, c.code)); n != 1 {
			t.Errorf("refusals{%s,%s} = %v, want 1", c.method, c.code, n)
		}
	}
}
