package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// validated is a request that carries a Validate method, the way role
// requests hook into input validation.
type validated struct{ *hivemindv1.InfoRequest }

func (validated) Validate() error { return errors.New("node_name: must not be empty") }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type denyWrites struct{}

func (denyWrites) Authenticate(ctx context.Context, method string) (context.Context, error) {
	if strings.HasSuffix(method, "/Deny") {
		return nil, status.Error(codes.Unauthenticated, "no token")
	}
	return ctx, nil
}

func testDesc() *grpc.ServiceDesc {
	unary := func(name string, newReq func() any, h func() (any, error)) grpc.MethodDesc {
		return grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			req := newReq()
			if err := dec(req); err != nil {
				return nil, err
			}
			info := &grpc.UnaryServerInfo{FullMethod: "/test.Svc/" + name}
			return ic(ctx, req, info, func(context.Context, any) (any, error) { return h() })
		}}
	}
	plain := func() any { return &hivemindv1.InfoRequest{} }
	ok := func() (any, error) { return &hivemindv1.InfoResponse{Role: "test"}, nil }
	return &grpc.ServiceDesc{
		ServiceName: "test.Svc",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			unary("Ok", plain, ok),
			unary("Validated", func() any { return validated{&hivemindv1.InfoRequest{}} }, ok),
			unary("Panic", plain, func() (any, error) { panic("boom") }),
			unary("Deny", plain, ok),
		},
	}
}

func TestServerInterceptors(t *testing.T) {
	logs := &syncBuf{}
	reg := prometheus.NewRegistry()
	srv, err := New(Config{
		Addr:       "127.0.0.1:0",
		Logger:     slog.New(slog.NewJSONHandler(logs, nil)),
		Registerer: reg,
		Auth:       denyWrites{},
	})
	if err != nil {
		t.Fatal(err)
	}
	var impl any
	srv.GRPC().RegisterService(testDesc(), impl)
	go srv.Serve()
	defer srv.Stop(context.Background())

	conn, err := grpcclient.Dial(srv.Addr(), grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	call := func(method string) error {
		return conn.Invoke(ctx, "/test.Svc/"+method, &hivemindv1.InfoRequest{}, &hivemindv1.InfoResponse{})
	}
	tests := []struct {
		method string
		code   codes.Code
		msg    string
	}{
		{"Ok", codes.OK, ""},
		{"Validated", codes.InvalidArgument, "node_name: must not be empty"},
		{"Panic", codes.Internal, "internal error"},
		{"Deny", codes.Unauthenticated, "no token"},
	}
	for _, tt := range tests {
		err := call(tt.method)
		st := status.Convert(err)
		if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
			t.Errorf("%s: got %v %q, want %v containing %q", tt.method, st.Code(), st.Message(), tt.code, tt.msg)
		}
	}

	// Health is not guarded by auth and starts NOT_SERVING.
	hc := healthpb.NewHealthClient(conn)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health before ready: %v %v", resp, err)
	}
	srv.SetServing(true)
	if resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after ready: %v %v", resp, err)
	}

	// One log line per call, with method, code and duration.
	for _, tt := range tests {
		n := strings.Count(logs.String(), `"grpc.method":"`+tt.method+`"`)
		if n != 1 {
			t.Errorf("%s: %d log lines, want 1\n%s", tt.method, n, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `"grpc.code":"InvalidArgument"`) || !strings.Contains(logs.String(), "grpc.time_ms") {
		t.Errorf("log lines lack code or duration:\n%s", logs.String())
	}
	// Metrics count every outcome.
	if n := testutil.CollectAndCount(reg, "grpc_server_handled_total"); n < 4 {
		t.Errorf("grpc_server_handled_total has %d series, want >= 4", n)
	}
}

// At warn level the call log keeps failed calls whose code maps to warn or
// error, and drops the rest without building their fields.
func TestCallLogAtWarn(t *testing.T) {
	logs := &syncBuf{}
	srv, err := New(Config{
		Addr:   "127.0.0.1:0",
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Auth:   denyWrites{},
	})
	if err != nil {
		t.Fatal(err)
	}
	var impl any
	srv.GRPC().RegisterService(testDesc(), impl)
	go srv.Serve()
	defer srv.Stop(context.Background())
	conn, err := grpcclient.Dial(srv.Addr(), grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range []string{"Ok", "Validated", "Deny", "Panic"} {
		_ = conn.Invoke(ctx, "/test.Svc/"+m, &hivemindv1.InfoRequest{}, &hivemindv1.InfoResponse{})
	}
	// OK, INVALID_ARGUMENT and UNAUTHENTICATED map to info; INTERNAL to error.
	for m, want := range map[string]int{"Ok": 0, "Validated": 0, "Deny": 0, "Panic": 1} {
		if n := strings.Count(logs.String(), `"grpc.method":"`+m+`"`); n != want {
			t.Errorf("%s: %d log lines, want %d\n%s", m, n, want, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `"grpc.code":"Internal"`) || !strings.Contains(logs.String(), `"msg":"finished call"`) {
		t.Errorf("the error line lacks its code or message:\n%s", logs.String())
	}
}
