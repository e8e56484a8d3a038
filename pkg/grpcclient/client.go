// Package grpcclient builds gRPC client connections for hivemind roles and
// tools: keepalive, and retries with exponential backoff and jitter for
// calls that fail with UNAVAILABLE.
//
// Retrying is safe because hivemind writes carry idempotency keys; a caller
// that sends a non-idempotent request without one can turn retries off per
// call with retry.Disable().
package grpcclient

import (
	// Registers the vtproto-aware codec for this process's gRPC calls.
	_ "github.com/hivemind/hivemind/pkg/grpccodec"

	"context"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Config configures a connection. Zero values take the documented defaults.
type Config struct {
	// TLS credentials; nil means plaintext.
	TLS credentials.TransportCredentials
	// Auth authenticates calls (auth.NodeAuth, auth.BearerToken); nil sends
	// no credentials.
	Auth Auth
	// MaxRetries of a call that failed with UNAVAILABLE. Default 5; -1 disables.
	MaxRetries int
	// BackoffBase is the first wait; it doubles per attempt, with 20%
	// jitter, up to BackoffMax. Defaults: 50ms and 2s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// PerCallTimeout bounds one attempt of a unary call; 0 means no bound
	// beyond the caller's context.
	PerCallTimeout time.Duration
	// MaxRecvMsgSize bounds an incoming message. Default 8 MiB.
	MaxRecvMsgSize int
	// ExtraOptions are appended to the dial options.
	ExtraOptions []grpc.DialOption
}

// Auth adds authentication to a connection. Dial calls DialOptions once
// per connection, so per-connection state (a session token) lives in the
// options it returns. Its interceptors run inside the retries, so every
// attempt carries the current credentials.
type Auth interface {
	DialOptions() []grpc.DialOption
}

// Dial creates a client connection to target (host:port, or any gRPC target
// syntax). It connects lazily, like grpc.NewClient.
func Dial(target string, cfg Config) (*grpc.ClientConn, error) {
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 5
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = 50 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 2 * time.Second
	}
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize = 8 << 20
	}
	creds := cfg.TLS
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize)),
	}
	if cfg.MaxRetries > 0 {
		retryOpts := []retry.CallOption{
			retry.WithMax(uint(cfg.MaxRetries)),
			retry.WithCodes(codes.Unavailable),
			retry.WithBackoff(retry.BackoffExponentialWithJitterBounded(cfg.BackoffBase, 0.2, cfg.BackoffMax)),
		}
		if cfg.PerCallTimeout > 0 {
			retryOpts = append(retryOpts, retry.WithPerRetryTimeout(cfg.PerCallTimeout))
		}
		opts = append(opts,
			grpc.WithChainUnaryInterceptor(retry.UnaryClientInterceptor(retryOpts...)),
			grpc.WithChainStreamInterceptor(serverStreamsOnly(retry.StreamClientInterceptor(retryOpts...))),
		)
	}
	if cfg.Auth != nil {
		opts = append(opts, cfg.Auth.DialOptions()...)
	}
	opts = append(opts, cfg.ExtraOptions...)
	return grpc.NewClient(target, opts...)
}

// serverStreamsOnly applies a retrying interceptor to server-streaming calls
// only: a client stream cannot be replayed, so it is passed through as is.
func serverStreamsOnly(next grpc.StreamClientInterceptor) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if desc.ClientStreams {
			return streamer(ctx, desc, cc, method, opts...)
		}
		return next(ctx, desc, cc, method, streamer, opts...)
	}
}
