package grpcserver

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Limits before anything is read.
//
// gRPC reads a whole request message before any interceptor runs, so
// authentication in an interceptor comes too late to protect memory: an
// unauthenticated caller could make the server buffer a message as large as
// the receive limit, many times over. The server therefore decides in a
// tap (grpc.InTapHandle), which sees the method and the metadata when the
// stream's headers arrive and before any of its data is accepted: callers
// that fail authentication, or that are over their rate, are refused there
// and their data is discarded by the transport unread. The interceptor chain
// then sees only calls the tap let through.
//
// The receive limit is the request limit plus EnvelopeBytes, because
// control-plane members wrap a client's request in a small envelope when
// they forward it to the leader; a request message (everything but the
// internal services) is held to the request limit exactly, and the error
// names it.

// DefaultMaxRequestBytes is the request limit when Config sets none.
const DefaultMaxRequestBytes = 4 << 20

// MinMaxRequestBytes is the smallest request limit a server accepts: raft
// traffic between members travels in frames of up to FrameBytes, and every
// member must be able to read every other member's frames.
const MinMaxRequestBytes = 1 << 20

// EnvelopeBytes is what the server reads beyond the request limit, for the
// envelope of internal calls (a forwarded command) and a frame's framing.
const EnvelopeBytes = 16 << 10

// RateLimit bounds how many calls one caller may start.
type RateLimit struct {
	// PerSecond is the sustained rate of calls each caller may start.
	// Zero or less: no rate limit.
	PerSecond float64
	// Burst is how many calls a caller may start at once.
	// Default: PerSecond rounded up.
	Burst int
	// Caller names the caller of an authenticated call, from the context
	// the Authenticator returned, and says whether it is exempt. ok false
	// (public methods, no identity) means the call is not limited.
	Caller func(ctx context.Context) (key string, exempt, ok bool)
}

// gatedKey marks a context the tap authenticated, so the interceptors do
// not authenticate the call a second time.
type gatedKey struct{}

// gate authenticates and rate-limits calls in the transport's tap.
type gate struct {
	auth    Authenticator
	limiter *limiter
	refused func(ctx context.Context, method string, err error)
}

func (g *gate) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if strings.HasPrefix(info.FullMethodName, healthPrefix) {
		return ctx, nil
	}
	actx, err := g.auth.Authenticate(ctx, info.FullMethodName)
	who := ctx // the caller's identity, once its credential is good
	if err == nil && g.limiter != nil {
		who = actx
		err = g.limiter.allow(actx)
	}
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Unauthenticated, err.Error())
		}
		g.refused(who, info.FullMethodName, err)
		return ctx, err
	}
	return context.WithValue(actx, gatedKey{}, true), nil
}

const healthPrefix = "/grpc.health.v1.Health/"

// limiter keeps one token bucket per caller. Buckets that are full again
// (their caller idle) are swept from time to time, so the map holds only
// callers active in the last sweep interval.
type limiter struct {
	cfg RateLimit

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

const sweepEvery = time.Minute

func newLimiter(cfg RateLimit) *limiter {
	if cfg.PerSecond <= 0 || cfg.Caller == nil {
		return nil
	}
	if cfg.Burst <= 0 {
		cfg.Burst = int(math.Ceil(cfg.PerSecond))
	}
	return &limiter{cfg: cfg, buckets: map[string]*rate.Limiter{}, lastSweep: time.Now()}
}

// allow takes a token from the caller's bucket, or answers
// RESOURCE_EXHAUSTED with the time after which a call would be allowed
// (RetryInfo, and in the message).
func (l *limiter) allow(ctx context.Context) error {
	key, exempt, ok := l.cfg.Caller(ctx)
	if !ok || exempt {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.lastSweep) > sweepEvery {
		for k, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.cfg.Burst) {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b, found := l.buckets[key]
	if !found {
		b = rate.NewLimiter(rate.Limit(l.cfg.PerSecond), l.cfg.Burst)
		l.buckets[key] = b
	}
	if b.AllowN(now, 1) {
		l.mu.Unlock()
		return nil
	}
	r := b.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	l.mu.Unlock()
	wait = max(wait, time.Millisecond)
	st := status.New(codes.ResourceExhausted, fmt.Sprintf(
		"rate limit: %s may start %g calls per second (burst %d); retry after %s",
		key, l.cfg.PerSecond, l.cfg.Burst, wait.Round(time.Millisecond)))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = d
	}
	return st.Err()
}

// sizer is what generated messages offer to measure themselves without
// reflection (vtproto).
type sizer interface{ SizeVT() int }

func msgSize(m any) int {
	if s, ok := m.(sizer); ok {
		return s.SizeVT()
	}
	if pm, ok := m.(proto.Message); ok {
		return proto.Size(pm)
	}
	return 0
}

// sizeCheck holds request messages to the request limit exactly; the
// transport already refused anything beyond the limit plus EnvelopeBytes.
type sizeCheck struct {
	max      int
	internal []string // service prefixes allowed the envelope
}

func (s sizeCheck) exempt(method string) bool {
	for _, p := range s.internal {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

func (s sizeCheck) check(m any) error {
	if n := msgSize(m); n > s.max {
		return status.Errorf(codes.ResourceExhausted, "request is %d bytes, more than the request limit of %d bytes (--max-request-bytes)", n, s.max)
	}
	return nil
}

func (s sizeCheck) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !s.exempt(info.FullMethod) {
			if err := s.check(req); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

func (s sizeCheck) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if s.exempt(info.FullMethod) {
			return handler(srv, ss)
		}
		return handler(srv, sizedStream{ServerStream: ss, s: s})
	}
}

type sizedStream struct {
	grpc.ServerStream
	s sizeCheck
}

func (w sizedStream) RecvMsg(m any) error {
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return w.s.check(m)
}
