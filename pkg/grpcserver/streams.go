package grpcserver

import (
	"context"
	"errors"
	"strings"
	"sync"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A stream (a watch, a push, a raft stream) lasts until the client or the
// handler ends it, so a graceful stop that only waits for calls to finish
// waits for its whole timeout, and a handler that returns because its
// context ended makes the stream end OK, which a client cannot tell from a
// normal end. openStreams ends them instead: each stream's context is
// cancelled with errShuttingDown and the stream ends with UNAVAILABLE, the
// code on which clients resume on another member.

// errShuttingDown is the cause with which open streams are cancelled.
var errShuttingDown = errors.New("server is shutting down")

// ShuttingDown is the status a stream ended by Drain or Stop gets.
var ShuttingDown = status.New(codes.Unavailable, "server is shutting down; resume on another member")

type openStream struct {
	cancel   context.CancelCauseFunc
	internal bool
}

type openStreams struct {
	internal []string

	mu       sync.Mutex
	draining bool // new streams but internal ones are refused
	stopped  bool // every new stream is refused
	open     map[*openStream]struct{}
}

func (o *openStreams) isInternal(method string) bool {
	for _, p := range o.internal {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

func (o *openStreams) interceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithCancelCause(ss.Context())
		defer cancel(nil)
		st := &openStream{cancel: cancel, internal: o.isInternal(info.FullMethod)}
		o.mu.Lock()
		if o.stopped || (o.draining && !st.internal) {
			o.mu.Unlock()
			return ShuttingDown.Err()
		}
		if o.open == nil {
			o.open = map[*openStream]struct{}{}
		}
		o.open[st] = struct{}{}
		o.mu.Unlock()
		defer func() {
			o.mu.Lock()
			delete(o.open, st)
			o.mu.Unlock()
		}()
		wrapped := middleware.WrapServerStream(ss)
		wrapped.WrappedContext = ctx
		err := handler(srv, wrapped)
		if errors.Is(context.Cause(ctx), errShuttingDown) {
			return ShuttingDown.Err()
		}
		return err
	}
}

// end cancels the open streams (the internal ones too if all) and refuses
// new ones alike.
func (o *openStreams) end(all bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.draining = true
	o.stopped = o.stopped || all
	for st := range o.open {
		if all || !st.internal {
			st.cancel(errShuttingDown)
		}
	}
}
