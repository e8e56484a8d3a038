package cpclient

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpccodec"
)

// maxStreamedEvent is the largest encoded append sent over the shared
// stream. Larger ones go as calls of their own: a message over the server's
// size limit ends the stream it travels on, with every append on it.
const maxStreamedEvent = 64 << 10

// errNoAppendStream: the endpoint does not serve AppendEvents (an older
// control plane); the append is made with AppendEvent instead.
var errNoAppendStream = errors.New("cpclient: endpoint has no AppendEvents")

// appender makes one endpoint's AppendEvent calls over one AppendEvents
// stream, opened on first use and again after it breaks. A stream costs the
// server and the client far less per event than a call (docs/bench.md);
// each append is still acknowledged on its own, once committed.
type appender struct {
	api  hivemindv1.ControlPlaneClient
	opts []grpc.CallOption

	mu     sync.Mutex
	cur    *appendStream // nil until opened, and after it broke
	unary  bool          // the endpoint has no AppendEvents
	closed bool
}

func (a *appender) append(ctx context.Context, req *hivemindv1.AppendEventRequest) (*hivemindv1.AppendEventResponse, error) {
	if req.SizeVT() > maxStreamedEvent {
		return a.api.AppendEvent(ctx, req, a.opts...)
	}
	s, err := a.stream()
	if err != nil {
		return nil, err
	}
	if s != nil {
		resp, err := s.append(ctx, req)
		if !errors.Is(err, errNoAppendStream) {
			return resp, err
		}
	}
	return a.api.AppendEvent(ctx, req, a.opts...)
}

// stream returns the open stream, opening one if needed; nil when the
// endpoint has no AppendEvents.
func (a *appender) stream() (*appendStream, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.closed:
		return nil, status.Error(codes.Canceled, "cpclient: client closed")
	case a.unary:
		return nil, nil
	case a.cur != nil:
		return a.cur, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := a.api.AppendEvents(ctx, a.opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &appendStream{owner: a, stream: st, cancel: cancel, waiting: map[uint64]chan appendResult{}, wake: make(chan struct{}, 1)}
	a.cur = s
	go s.sendLoop(ctx)
	go s.recvLoop()
	return s, nil
}

// broke forgets s, once it failed with err.
func (a *appender) broke(s *appendStream, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur == s {
		a.cur = nil
	}
	if errors.Is(err, errNoAppendStream) {
		a.unary = true
	}
}

func (a *appender) close() {
	a.mu.Lock()
	s := a.cur
	a.closed, a.cur = true, nil
	a.mu.Unlock()
	if s != nil {
		s.fail(status.Error(codes.Canceled, "cpclient: client closed"))
	}
}

type appendResult struct {
	resp *hivemindv1.AppendEventResponse
	err  error
}

// appendStream is one open AppendEvents stream: callers queue encoded
// requests for its sender and wait for the answer with their seq.
type appendStream struct {
	owner  *appender
	stream grpc.BidiStreamingClient[hivemindv1.AppendEventsRequest, hivemindv1.AppendEventsResponse]
	cancel context.CancelFunc
	seq    atomic.Uint64

	mu      sync.Mutex
	waiting map[uint64]chan appendResult
	queue   []grpccodec.Encoded
	err     error         // set once the stream broke
	wake    chan struct{} // capacity 1
}

func (s *appendStream) append(ctx context.Context, req *hivemindv1.AppendEventRequest) (*hivemindv1.AppendEventResponse, error) {
	seq := s.seq.Add(1)
	// Encoded here, on the caller's goroutine, so that the sender only
	// writes; and the caller's request is not read after the call returns.
	b, err := (&hivemindv1.AppendEventsRequest{Seq: seq, Event: req}).MarshalVT()
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "cpclient: encoding the event: %v", err)
	}
	ch := make(chan appendResult, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	s.waiting[seq] = ch
	s.queue = append(s.queue, b)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.waiting, seq)
		s.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (s *appendStream) sendLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, b := range batch {
			if err := s.stream.SendMsg(b); err != nil {
				// On io.EOF the stream ended and recvLoop learns why;
				// any other error was the client's own and ended it too.
				if !errors.Is(err, io.EOF) {
					s.fail(err)
				}
				return
			}
		}
	}
}

func (s *appendStream) recvLoop() {
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.fail(streamEnded(err))
			return
		}
		s.mu.Lock()
		ch, ok := s.waiting[m.GetSeq()]
		delete(s.waiting, m.GetSeq())
		s.mu.Unlock()
		if ok {
			ch <- outcome(m)
		}
	}
}

// outcome turns one answer into what AppendEvent would have returned.
func outcome(m *hivemindv1.AppendEventsResponse) appendResult {
	switch {
	case m.GetCode() != 0:
		return appendResult{err: status.Error(codes.Code(m.GetCode()), m.GetMessage())}
	case m.GetAppended() == nil:
		return appendResult{err: status.Error(codes.Internal, "cpclient: append answered without an outcome")}
	}
	return appendResult{resp: m.GetAppended()}
}

// streamEnded is the error the appends waiting on a stream that ended get.
// They may or may not have been committed; a retry with the same
// idempotency key settles it, so an end that is not the server's refusal
// is UNAVAILABLE.
func streamEnded(err error) error {
	switch status.Code(err) {
	case codes.Unimplemented:
		return errNoAppendStream
	case codes.OK: // io.EOF: the server ended the stream without a status
		return status.Error(codes.Unavailable, "cpclient: the append stream was ended by the server")
	}
	return err
}

// fail ends the stream: every waiting append, and every later one that
// still finds it, gets err.
func (s *appendStream) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	waiting := s.waiting
	s.waiting, s.queue = nil, nil
	s.mu.Unlock()
	s.owner.broke(s, err)
	s.cancel()
	for _, ch := range waiting {
		ch <- appendResult{err: err}
	}
}
