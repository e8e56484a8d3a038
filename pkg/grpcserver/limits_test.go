package grpcserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// payloadCounter counts the request bytes the server read, whoever sent
// them: gRPC reports every received message to its stats handler.
type payloadCounter struct{ bytes atomic.Int64 }

func (p *payloadCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (p *payloadCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		p.bytes.Add(int64(in.WireLength))
	}
}
func (p *payloadCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (p *payloadCounter) HandleConn(context.Context, stats.ConnStats) {}

// callerAuth admits a call whose "caller" metadata names it, and puts the
// name in the context for the rate limit; "/Deny" is refused.
type callerAuth struct{}

type callerKey struct{}

func (callerAuth) Authenticate(ctx context.Context, method string) (context.Context, error) {
	if strings.HasSuffix(method, "/Deny") {
		return nil, status.Error(codes.Unauthenticated, "no token")
	}
	if v := metadata.ValueFromIncomingContext(ctx, "caller"); len(v) == 1 {
		return context.WithValue(ctx, callerKey{}, v[0]), nil
	}
	return ctx, nil
}

func testCaller(ctx context.Context) (string, bool, bool) {
	name, ok := ctx.Value(callerKey{}).(string)
	return name, name == "exempt", ok
}

func startLimited(t *testing.T, cfg Config) (*grpc.ClientConn, *payloadCounter) {
	t.Helper()
	pc := &payloadCounter{}
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Auth = callerAuth{}
	cfg.ExtraOptions = append(cfg.ExtraOptions, grpc.StatsHandler(pc))
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var impl any
	srv.GRPC().RegisterService(testDesc(), impl)
	go srv.Serve()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	conn, err := grpcclient.Dial(srv.Addr(), grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, pc
}

// bigRequest is about n bytes on the wire; the test methods decode it as
// an InfoRequest whose unknown fields they keep.
func bigRequest(n int) *hivemindv1.PutRequest {
	return &hivemindv1.PutRequest{Value: make([]byte, n)}
}

// A caller that fails authentication is refused when its headers arrive:
// the server reads none of its request, however large (here 48 MiB under a
// 64 MiB limit), and answers UNAUTHENTICATED rather than a size error.
func TestUnauthenticatedRequestIsNotRead(t *testing.T) {
	conn, pc := startLimited(t, Config{MaxRequestBytes: 64 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := conn.Invoke(ctx, "/test.Svc/Deny", bigRequest(48<<20), &hivemindv1.InfoResponse{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Deny with 48 MiB: %v, want UNAUTHENTICATED", err)
	}
	if n := pc.bytes.Load(); n != 0 {
		t.Fatalf("the server read %d bytes of an unauthenticated request, want 0", n)
	}
	// An authenticated call of the same size is read: the counter works.
	if err := conn.Invoke(ctx, "/test.Svc/Ok", bigRequest(1<<20), &hivemindv1.InfoResponse{}); err != nil {
		t.Fatal(err)
	}
	if n := pc.bytes.Load(); n < 1<<20 {
		t.Fatalf("the server read %d bytes of an admitted 1 MiB request", n)
	}
}

// An authenticated request above the request limit is refused with
// RESOURCE_EXHAUSTED: far above it by the transport, just above it by the
// size check, which names the limit and its flag.
func TestRequestLimit(t *testing.T) {
	conn, _ := startLimited(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tt := range []struct {
		size int
		want string
	}{
		{5 << 20, "larger than max"},
		{DefaultMaxRequestBytes + 100, "request limit of 4194304 bytes (--max-request-bytes)"},
	} {
		err := conn.Invoke(ctx, "/test.Svc/Ok", bigRequest(tt.size), &hivemindv1.InfoResponse{})
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), tt.want) {
			t.Errorf("%d bytes: %v, want RESOURCE_EXHAUSTED containing %q", tt.size, err, tt.want)
		}
	}
	if err := conn.Invoke(ctx, "/test.Svc/Ok", bigRequest(DefaultMaxRequestBytes-100), &hivemindv1.InfoResponse{}); err != nil {
		t.Errorf("a request under the limit: %v", err)
	}
}

func TestRequestLimitBelowMinimum(t *testing.T) {
	_, err := New(Config{Addr: "127.0.0.1:0", MaxRequestBytes: 1000})
	if err == nil || !strings.Contains(err.Error(), "max request bytes") {
		t.Fatalf("New with a 1000-byte limit: %v", err)
	}
}

// A caller over its rate gets RESOURCE_EXHAUSTED with a retry delay; other
// callers and exempt ones are unaffected.
func TestRateLimitPerCaller(t *testing.T) {
	conn, _ := startLimited(t, Config{RateLimit: RateLimit{PerSecond: 0.5, Burst: 3, Caller: testCaller}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(caller string) error {
		cctx := metadata.AppendToOutgoingContext(ctx, "caller", caller)
		return conn.Invoke(cctx, "/test.Svc/Ok", &hivemindv1.InfoRequest{}, &hivemindv1.InfoResponse{})
	}
	for i := range 3 {
		if err := call("greedy"); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	err := call("greedy")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "greedy may start 0.5 calls per second (burst 3)") {
		t.Fatalf("call over the rate: %v", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 || retry.GetRetryDelay().AsDuration() > 2*time.Second {
		t.Fatalf("RetryInfo: %v, want a delay in (0, 2s]", retry)
	}
	for i := range 5 {
		if err := call("other"); i < 3 && err != nil {
			t.Fatalf("another caller, call %d: %v", i, err)
		}
		if err := call("exempt"); err != nil {
			t.Fatalf("an exempt caller, call %d: %v", i, err)
		}
	}
	// A call without an identity (public) is not limited.
	for range 5 {
		if err := conn.Invoke(ctx, "/test.Svc/Ok", &hivemindv1.InfoRequest{}, &hivemindv1.InfoResponse{}); err != nil {
			t.Fatalf("a public call: %v", err)
		}
	}
}

// Without a rate limit configured no caller is limited.
func TestNoRateLimitByDefault(t *testing.T) {
	conn, _ := startLimited(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cctx := metadata.AppendToOutgoingContext(ctx, "caller", "busy")
	for i := range 50 {
		err := conn.Invoke(cctx, "/test.Svc/Ok", &hivemindv1.InfoRequest{}, &hivemindv1.InfoResponse{})
		if err != nil {
			t.Fatalf("call %d: %v", i, errors.Unwrap(err))
		}
	}
}
