// Package cpclient is the client every role uses to talk to the control
// plane. It spreads over several control-plane endpoints, prefers the
// leader (so writes skip the forwarding hop), and retries UNAVAILABLE on
// another endpoint with backoff. Writes carry an idempotency key, set once
// per call before the first attempt, so a retry after a lost answer is
// applied once.
package cpclient

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/backoff"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	// Endpoints are control-plane gRPC addresses. At least one.
	Endpoints []string
	// Dial is the connection configuration (TLS, message sizes). Its own
	// retries are turned off: the Client retries across endpoints instead.
	Dial grpcclient.Config
	// MaxAttempts of one call over all endpoints. Default 10.
	MaxAttempts int
	// BackoffBase doubles per attempt up to BackoffMax. Defaults 50ms, 1s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// CallOptions are added to every call (e.g. per-RPC credentials).
	CallOptions []grpc.CallOption
	// UnaryAppends makes every AppendEvent a call of its own instead of a
	// message on the endpoint's shared AppendEvents stream (the default,
	// much cheaper per event; see docs/bench.md).
	UnaryAppends bool
}

// Client is safe for concurrent use.
type Client struct {
	cfg     Config
	conns   []*grpc.ClientConn
	apis    []hivemindv1.ControlPlaneClient
	members []hivemindv1.MembershipClient
	// appenders, one per endpoint, carry AppendEvent over a stream; nil
	// with UnaryAppends.
	appenders []*appender

	mu      sync.Mutex
	current int
}

// New connects (lazily) to every endpoint.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("cpclient: no control-plane endpoints")
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = 50 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = time.Second
	}
	cfg.Dial.MaxRetries = -1
	c := &Client{cfg: cfg}
	for _, ep := range cfg.Endpoints {
		conn, err := grpcclient.Dial(ep, cfg.Dial)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("cpclient: dial %s: %w", ep, err)
		}
		c.conns = append(c.conns, conn)
		c.apis = append(c.apis, hivemindv1.NewControlPlaneClient(conn))
		c.members = append(c.members, hivemindv1.NewMembershipClient(conn))
		if !cfg.UnaryAppends {
			c.appenders = append(c.appenders, &appender{api: c.apis[len(c.apis)-1], opts: cfg.CallOptions})
		}
	}
	return c, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	var errs []error
	for _, a := range c.appenders {
		a.close()
	}
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// NewIdempotencyKey returns a random key for a write.
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ensureKey gives a write an idempotency key once, before its first
// attempt, so every retry carries the same one.
func ensureKey(key *string) {
	if *key == "" {
		*key = NewIdempotencyKey()
	}
}

func (c *Client) pick() (int, hivemindv1.ControlPlaneClient) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current, c.apis[c.current]
}

// failed moves on from endpoint i, unless another call already did.
func (c *Client) failed(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == i {
		c.current = (i + 1) % len(c.apis)
	}
}

// follow points the client at the endpoint whose address is the leader's.
func (c *Client) follow(leaderAddr string) {
	for i, ep := range c.cfg.Endpoints {
		if ep == leaderAddr {
			c.mu.Lock()
			c.current = i
			c.mu.Unlock()
			return
		}
	}
}

// retryable says whether a call may be tried again on another endpoint.
func retryable(err error) bool {
	return status.Code(err) == codes.Unavailable
}

func do[T any](ctx context.Context, c *Client, call func(hivemindv1.ControlPlaneClient) (T, error)) (T, error) {
	return doAt(ctx, c, func(i int) (T, error) { return call(c.apis[i]) })
}

// doAt calls call with the index of the endpoint to use, moving on to the
// next endpoint after UNAVAILABLE, with backoff.
func doAt[T any](ctx context.Context, c *Client, call func(i int) (T, error)) (T, error) {
	var zero T
	var last error
	for attempt := 0; attempt < c.cfg.MaxAttempts; attempt++ {
		i, _ := c.pick()
		resp, err := call(i)
		if err == nil {
			return resp, nil
		}
		if !retryable(err) || ctx.Err() != nil {
			return zero, err
		}
		last = err
		c.failed(i)
		if err := backoff.Sleep(ctx, c.backoff(attempt)); err != nil {
			return zero, last
		}
	}
	return zero, last
}

func (c *Client) backoff(attempt int) time.Duration {
	return backoff.Equal(c.cfg.BackoffBase, c.cfg.BackoffMax, attempt)
}

// FindLeader asks the endpoints for the leader and sends later calls there.
func (c *Client) FindLeader(ctx context.Context) error {
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	for _, m := range st.GetVoters() {
		if m.GetId() == st.GetLeaderId() {
			c.follow(m.GetGrpcAddress())
			return nil
		}
	}
	return errors.New("cpclient: no leader known")
}

// Status reports the answering node's view of the cluster.
func (c *Client) Status(ctx context.Context) (*hivemindv1.StatusResponse, error) {
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.StatusResponse, error) {
		return api.Status(ctx, &hivemindv1.StatusRequest{}, c.cfg.CallOptions...)
	})
}

// Put writes a key. An empty IdempotencyKey is filled in.
func (c *Client) Put(ctx context.Context, req *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.PutResponse, error) {
		return api.Put(ctx, req, c.cfg.CallOptions...)
	})
}

// Get reads a key.
func (c *Client) Get(ctx context.Context, req *hivemindv1.GetRequest) (*hivemindv1.GetResponse, error) {
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.GetResponse, error) {
		return api.Get(ctx, req, c.cfg.CallOptions...)
	})
}

// Range reads the keys under a prefix.
func (c *Client) Range(ctx context.Context, req *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error) {
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.RangeResponse, error) {
		return api.Range(ctx, req, c.cfg.CallOptions...)
	})
}

// Delete removes a key or a prefix. An empty IdempotencyKey is filled in.
func (c *Client) Delete(ctx context.Context, req *hivemindv1.DeleteRequest) (*hivemindv1.DeleteResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.DeleteResponse, error) {
		return api.Delete(ctx, req, c.cfg.CallOptions...)
	})
}

// Txn runs a transaction. An empty IdempotencyKey is filled in.
func (c *Client) Txn(ctx context.Context, req *hivemindv1.TxnRequest) (*hivemindv1.TxnResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.TxnResponse, error) {
		return api.Txn(ctx, req, c.cfg.CallOptions...)
	})
}

// AppendEvent appends an event. An empty IdempotencyKey is filled in.
// Concurrent appends to one endpoint share an AppendEvents stream unless
// Config.UnaryAppends is set; either way each returns once its event is
// committed, and retries keep the key.
func (c *Client) AppendEvent(ctx context.Context, req *hivemindv1.AppendEventRequest) (*hivemindv1.AppendEventResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return doAt(ctx, c, func(i int) (*hivemindv1.AppendEventResponse, error) {
		if c.appenders == nil {
			return c.apis[i].AppendEvent(ctx, req, c.cfg.CallOptions...)
		}
		return c.appenders[i].append(ctx, req)
	})
}

// ClaimIntent claims (or renews) an intent. An empty IdempotencyKey is filled in.
func (c *Client) ClaimIntent(ctx context.Context, req *hivemindv1.ClaimIntentRequest) (*hivemindv1.ClaimIntentResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.ClaimIntentResponse, error) {
		return api.ClaimIntent(ctx, req, c.cfg.CallOptions...)
	})
}

// CompleteIntent records an intent's outcome. An empty IdempotencyKey is filled in.
func (c *Client) CompleteIntent(ctx context.Context, req *hivemindv1.CompleteIntentRequest) (*hivemindv1.CompleteIntentResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.CompleteIntentResponse, error) {
		return api.CompleteIntent(ctx, req, c.cfg.CallOptions...)
	})
}

// ReleaseIntent gives up a claim. An empty IdempotencyKey is filled in.
func (c *Client) ReleaseIntent(ctx context.Context, req *hivemindv1.ReleaseIntentRequest) (*hivemindv1.ReleaseIntentResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return do(ctx, c, func(api hivemindv1.ControlPlaneClient) (*hivemindv1.ReleaseIntentResponse, error) {
		return api.ReleaseIntent(ctx, req, c.cfg.CallOptions...)
	})
}

// Join asks the control plane to admit a node (Membership/Join on a
// control-plane endpoint). An empty IdempotencyKey is filled in.
func (c *Client) Join(ctx context.Context, req *hivemindv1.JoinRequest) (*hivemindv1.JoinResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return doAt(ctx, c, func(i int) (*hivemindv1.JoinResponse, error) {
		return c.members[i].Join(ctx, req, c.cfg.CallOptions...)
	})
}

// Leave records that a node leaves. An empty IdempotencyKey is filled in.
func (c *Client) Leave(ctx context.Context, req *hivemindv1.LeaveRequest) (*hivemindv1.LeaveResponse, error) {
	ensureKey(&req.IdempotencyKey)
	return doAt(ctx, c, func(i int) (*hivemindv1.LeaveResponse, error) {
		return c.members[i].Leave(ctx, req, c.cfg.CallOptions...)
	})
}

// Watch calls fn with every response of a watch from req.StartRevision on.
// When a stream breaks with UNAVAILABLE it resumes on another endpoint from
// the revision after the last one delivered, so fn sees no gap and no
// duplicate. It returns when ctx ends, fn returns an error, or the watch
// fails for good (for example with OUT_OF_RANGE when history was compacted).
func (c *Client) Watch(ctx context.Context, req *hivemindv1.WatchRequest, fn func(*hivemindv1.WatchResponse) error) error {
	next := req.GetStartRevision()
	failures := 0
	for {
		r := cloneWatch(req, next)
		i, api := c.pick()
		stream, err := api.Watch(ctx, r, c.cfg.CallOptions...)
		if err == nil {
			for {
				var resp *hivemindv1.WatchResponse
				resp, err = stream.Recv()
				if err != nil {
					break
				}
				failures = 0
				if n := len(resp.GetEvents()); n > 0 {
					next = resp.GetEvents()[n-1].GetRevision() + 1
				} else if resp.GetProgress() && next == 0 {
					next = resp.GetHeader().GetRevision() + 1
				}
				if ferr := fn(resp); ferr != nil {
					return ferr
				}
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != io.EOF && !retryable(err) {
			return err
		}
		c.failed(i)
		if err := backoff.Sleep(ctx, c.backoff(failures)); err != nil {
			return err
		}
		failures++
	}
}

func cloneWatch(req *hivemindv1.WatchRequest, start int64) *hivemindv1.WatchRequest {
	return &hivemindv1.WatchRequest{
		StartRevision:    start,
		Prefix:           req.GetPrefix(),
		Types:            req.GetTypes(),
		ProgressInterval: req.GetProgressInterval(),
	}
}

// IssueNodeCertificate asks the control-plane members in turn for a
// certificate for this node (the caller's own identity): members without
// the CA key do not serve Certificates, and one without a quorum may not
// know the caller's binding yet, so the next is tried.
func (c *Client) IssueNodeCertificate(ctx context.Context) (*hivemindv1.IssueNodeCertificateResponse, error) {
	var errs []error
	for i, conn := range c.conns {
		resp, err := hivemindv1.NewCertificatesClient(conn).IssueNodeCertificate(ctx, &hivemindv1.IssueNodeCertificateRequest{}, c.cfg.CallOptions...)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", c.cfg.Endpoints[i], err))
		if ctx.Err() != nil {
			break
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.Unimplemented, codes.FailedPrecondition, codes.Unauthenticated, codes.DeadlineExceeded:
		default:
			return nil, errors.Join(errs...)
		}
	}
	return nil, errors.Join(errs...)
}
