package api

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpccodec"
)

// MaxStreamAppends bounds the appends of one AppendEvents stream in flight
// at once (its workers, each running one). Past it the stream reads no
// further request until one finishes, which holds the sender back through
// HTTP/2 flow control.
const MaxStreamAppends = 4096

// errShuttingDown ends the append streams of a member that shuts down, and
// answers what arrives on them meanwhile.
var errShuttingDown = status.Error(codes.Unavailable, "control-plane member shutting down; retry on another")

// AppendEvents implements hivemindv1.ControlPlaneServer. Each request is an
// AppendEvent of its own, run concurrently with the stream's others and
// answered when done, so the answers come in the order the appends finish.
// The stream ends when the caller closes its side (after the last answer),
// when the caller goes away, or when this member shuts down (UNAVAILABLE,
// after the appends in flight are answered).
func (s *Server) AppendEvents(stream hivemindv1.ControlPlane_AppendEventsServer) error {
	ctx := stream.Context()
	out := &streamAnswers{wake: make(chan struct{}, 1)}
	received := make(chan error, 1)
	go func() { received <- s.receiveAppends(ctx, stream, out) }()

	var final error // how the stream ends once every append is answered
	for final == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-out.wake:
			if err := out.send(stream); err != nil {
				return err
			}
			continue
		case err := <-received:
			if !errors.Is(err, io.EOF) {
				return err
			}
			final = io.EOF
		case <-s.closing:
			final = errShuttingDown
		}
	}
	for {
		if err := out.send(stream); err != nil {
			return err
		}
		if out.idle() {
			if final == io.EOF {
				return nil
			}
			return final
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-out.wake:
		}
	}
}

// receiveAppends reads the stream's requests and hands each to a worker
// until the stream ends. Once the member is shutting down, requests are
// answered UNAVAILABLE instead.
//
// A worker runs one append at a time and then waits for the next; a new one
// starts only when none is idle, so a stream has as many as it has appends
// in flight at its busiest (at most MaxStreamAppends) and they end with the
// stream. Reusing them spares each append a goroutine start and the growth
// of a fresh goroutine's stack, a tenth of the leader's CPU at high rates.
func (s *Server) receiveAppends(ctx context.Context, stream hivemindv1.ControlPlane_AppendEventsServer, out *streamAnswers) error {
	work := make(chan *hivemindv1.AppendEventsRequest) // unbuffered: taken only by an idle worker
	defer close(work)
	workers := 0
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		select {
		case <-s.closing:
			out.push(appendAnswer(req.GetSeq(), nil, errShuttingDown))
			continue
		default:
		}
		out.start()
		select {
		case work <- req:
			continue
		default:
		}
		if workers < MaxStreamAppends {
			workers++
			go s.appendWorker(ctx, req, work, out)
			continue
		}
		select { // MaxStreamAppends in flight: wait for a worker to be done
		case work <- req:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// appendWorker runs first, then every append handed to it, until the
// stream's work ends.
func (s *Server) appendWorker(ctx context.Context, first *hivemindv1.AppendEventsRequest, work <-chan *hivemindv1.AppendEventsRequest, out *streamAnswers) {
	for req, ok := first, true; ok; req, ok = <-work {
		var resp *hivemindv1.AppendEventResponse
		err := status.Error(codes.InvalidArgument, "invalid event: must be set")
		if req.GetEvent() != nil {
			resp, err = s.AppendEvent(ctx, req.GetEvent())
		}
		out.finish(appendAnswer(req.GetSeq(), resp, err))
	}
}

// appendAnswer encodes one request's answer (on the goroutine that ran the
// append, so that the stream's sender only writes bytes).
func appendAnswer(seq uint64, resp *hivemindv1.AppendEventResponse, err error) grpccodec.Encoded {
	a := &hivemindv1.AppendEventsResponse{Seq: seq, Appended: resp}
	if err != nil {
		st := status.Convert(err)
		a = &hivemindv1.AppendEventsResponse{Seq: seq, Code: int32(st.Code()), Message: st.Message()}
	}
	b, err := a.MarshalVT()
	if err != nil {
		// Only an event too large to encode gets here.
		b, _ = (&hivemindv1.AppendEventsResponse{Seq: seq, Code: int32(codes.Internal), Message: "encoding the answer: " + err.Error()}).MarshalVT()
	}
	return b
}

// streamAnswers queues the answers of one stream for its sender and counts
// the appends still running.
type streamAnswers struct {
	mu      sync.Mutex
	queue   []grpccodec.Encoded
	running int
	wake    chan struct{} // capacity 1
}

func (a *streamAnswers) start() {
	a.mu.Lock()
	a.running++
	a.mu.Unlock()
}

// finish queues the answer of an append that was started.
func (a *streamAnswers) finish(b grpccodec.Encoded) { a.queueAnswer(b, 1) }

// push queues the answer of a request that was not started.
func (a *streamAnswers) push(b grpccodec.Encoded) { a.queueAnswer(b, 0) }

// queueAnswer queues b and counts done appends as finished, both at once so
// that idle never sees an append neither running nor answered.
func (a *streamAnswers) queueAnswer(b grpccodec.Encoded, done int) {
	a.mu.Lock()
	a.running -= done
	a.queue = append(a.queue, b)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// idle reports whether no append is running and no answer waits.
func (a *streamAnswers) idle() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running == 0 && len(a.queue) == 0
}

// send writes the queued answers.
func (a *streamAnswers) send(stream hivemindv1.ControlPlane_AppendEventsServer) error {
	a.mu.Lock()
	batch := a.queue
	a.queue = nil
	a.mu.Unlock()
	for _, b := range batch {
		if err := stream.SendMsg(b); err != nil {
			return err
		}
	}
	return nil
}
