// Package grpcserver builds the gRPC server every hivemind role runs:
// authentication and a per-caller rate limit before a request is read (see
// limits.go), a request size limit, the same interceptor chain (panic
// recovery, Prometheus metrics, one log line per call, input validation),
// gRPC health, server reflection, keepalive and graceful stop.
package grpcserver

import (
	// Registers the vtproto-aware codec for this process's gRPC calls.
	_ "github.com/hivemind/hivemind/pkg/grpccodec"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/validator"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Authenticator decides whether a call may proceed. It returns the context
// the handler runs with (typically carrying the caller's identity) or an
// error with a gRPC status (UNAUTHENTICATED, PERMISSION_DENIED).
type Authenticator interface {
	Authenticate(ctx context.Context, fullMethod string) (context.Context, error)
}

// AllowAll lets every call through. It is what roles use until the identity
// layer provides a real Authenticator.
type AllowAll struct{}

// Authenticate implements Authenticator.
func (AllowAll) Authenticate(ctx context.Context, _ string) (context.Context, error) { return ctx, nil }

// Config configures a Server. The zero value of every optional field has a
// documented default.
type Config struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:7000".
	Addr string
	// Logger receives one line per call. Default: slog.Default().
	Logger *slog.Logger
	// Registerer receives the gRPC server metrics. Default: none registered.
	Registerer prometheus.Registerer
	// Auth guards every call except the health service. Default: AllowAll.
	Auth Authenticator
	// TLS, when set, serves TLS (or mTLS) instead of plaintext.
	TLS credentials.TransportCredentials
	// MaxRequestBytes bounds a request message; a larger one is refused
	// with RESOURCE_EXHAUSTED naming the limit. Default:
	// DefaultMaxRequestBytes (4 MiB); at least MinMaxRequestBytes.
	MaxRequestBytes int
	// InternalServices are service name prefixes (e.g.
	// "/hivemind.raft.v1.Raft/") whose messages may be up to EnvelopeBytes
	// larger than MaxRequestBytes. Default: none.
	InternalServices []string
	// RateLimit bounds the calls each caller may start. Default: none.
	RateLimit RateLimit
	// Keepalive defaults: ping idle clients every 30s, drop them after 10s
	// without an answer, accept client pings every 10s at most.
	Keepalive keepalive.ServerParameters
	// Audit configures the audit trail; refusals are counted by method
	// whatever it says.
	Audit Audit
	// ExtraOptions are appended to the server options.
	ExtraOptions []grpc.ServerOption
}

// Server is a listening gRPC server with health and reflection registered.
type Server struct {
	grpc    *grpc.Server
	health  *health.Server
	lis     net.Listener
	metrics *grpcprom.ServerMetrics
	log     *slog.Logger
	open    *openStreams
	// streams names the registered streaming methods, for the log line of
	// a call refused before it reached a handler. Written once in Serve.
	streams map[string]bool
	audit   *auditor
}

// New listens on cfg.Addr and builds the server. Register services on
// GRPC() before calling Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Auth == nil {
		cfg.Auth = AllowAll{}
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxRequestBytes < MinMaxRequestBytes {
		return nil, fmt.Errorf("max request bytes: %d is less than the minimum %d", cfg.MaxRequestBytes, MinMaxRequestBytes)
	}
	if cfg.Keepalive == (keepalive.ServerParameters{}) {
		cfg.Keepalive = keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("grpc listen on %s: %w", cfg.Addr, err)
	}

	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(metrics); err != nil {
			lis.Close()
			return nil, fmt.Errorf("register grpc metrics: %w", err)
		}
	}
	logger := callLogger(cfg.Logger)
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		cfg.Logger.ErrorContext(ctx, "panic in grpc handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_refused_total",
		Help: "Calls refused before their request was read (authentication, rate limit), by gRPC code.",
	}, []string{"grpc_code"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(refused); err != nil {
			lis.Close()
			return nil, fmt.Errorf("register grpc metrics: %w", err)
		}
	}
	aud := newAuditor(cfg.Audit)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(aud.refusals); err != nil {
			lis.Close()
			return nil, fmt.Errorf("register grpc metrics: %w", err)
		}
	}
	s := &Server{lis: lis, metrics: metrics, log: cfg.Logger, audit: aud, open: &openStreams{internal: cfg.InternalServices}}
	g := &gate{auth: cfg.Auth, limiter: newLimiter(cfg.RateLimit), refused: func(ctx context.Context, method string, err error) {
		refused.WithLabelValues(status.Code(err).String()).Inc()
		aud.tapRefused(ctx, method, err)
		logFailure(ctx, cfg.Logger, method, s.methodType(method), time.Now(), err)
	}}
	// The tap authenticated every call but health before its request was
	// read; this is a second line for a call that did not pass through it.
	authFn := func(ctx context.Context) (context.Context, error) {
		method, _ := grpc.Method(ctx)
		if ctx.Value(gatedKey{}) != nil || strings.HasPrefix(method, healthPrefix) {
			return ctx, nil
		}
		return cfg.Auth.Authenticate(ctx, method)
	}
	sizes := sizeCheck{max: cfg.MaxRequestBytes, internal: cfg.InternalServices}

	opts := []grpc.ServerOption{
		grpc.InTapHandle(g.tap),
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes + EnvelopeBytes),
		grpc.KeepaliveParams(cfg.Keepalive),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Order matters: metrics and logging see every outcome, including
		// rejections by auth and validation and recovered panics.
		grpc.ChainUnaryInterceptor(
			metrics.UnaryServerInterceptor(),
			gatedUnary(cfg.Logger, logging.UnaryServerInterceptor(logger, logOpts...)),
			recovery.UnaryServerInterceptor(recoverOpts...),
			auth.UnaryServerInterceptor(authFn),
			aud.unary(),
			sizes.unary(),
			validator.UnaryServerInterceptor(),
		),
		grpc.ChainStreamInterceptor(
			metrics.StreamServerInterceptor(),
			gatedStream(cfg.Logger, logging.StreamServerInterceptor(logger, logOpts...)),
			s.open.interceptor(),
			recovery.StreamServerInterceptor(recoverOpts...),
			auth.StreamServerInterceptor(authFn),
			aud.stream(),
			sizes.stream(),
			validator.StreamServerInterceptor(),
		),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(cfg.TLS))
	}
	opts = append(opts, cfg.ExtraOptions...)

	s.grpc = grpc.NewServer(opts...)
	s.health = health.NewServer()
	// Not serving until the role says it is ready.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s, nil
}

func (s *Server) methodType(method string) string {
	if s.streams[method] {
		return "stream"
	}
	return "unary"
}

// callLogger adapts slog to the middleware's logger: one line per finished
// call with method, code, duration and peer.
func callLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// GRPC returns the underlying server, to register services on.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// SetServing sets the overall health status and that of each named service.
func (s *Server) SetServing(serving bool, services ...string) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for _, svc := range services {
		s.health.SetServingStatus(svc, st)
	}
}

// Serve serves until Stop. It returns nil after a graceful stop.
func (s *Server) Serve() error {
	// Metrics are initialised here so every registered method shows up in
	// /metrics at zero before its first call.
	s.metrics.InitializeMetrics(s.grpc)
	streams, known := map[string]bool{}, map[string]bool{}
	for svc, info := range s.grpc.GetServiceInfo() {
		for _, m := range info.Methods {
			known["/"+svc+"/"+m.Name] = true
			if m.IsClientStream || m.IsServerStream {
				streams["/"+svc+"/"+m.Name] = true
			}
		}
	}
	s.streams = streams
	s.audit.known.Store(&known)
	err := s.grpc.Serve(s.lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Drain ends the open streams of every service but the internal ones
// with UNAVAILABLE (ShuttingDown), so their clients resume on another
// member while the role is still stopping, and refuses new ones alike.
// Unary calls are still served.
func (s *Server) Drain() { s.open.end(false) }

// Stop marks the server not serving, then stops gracefully: in-flight
// unary calls finish, and every open stream ends at once with UNAVAILABLE
// (ShuttingDown). When ctx ends first, remaining calls are cut off.
func (s *Server) Stop(ctx context.Context) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	s.open.end(true)
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("graceful stop timed out; closing remaining calls")
		s.grpc.Stop()
		<-done
	}
}
