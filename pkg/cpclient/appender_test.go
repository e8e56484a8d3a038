package cpclient

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// fakeCP answers appends with the request's uri and key echoed; it counts
// how each append arrived. With noStream it is a control plane from before
// AppendEvents; breakAfter > 0 ends each stream with UNAVAILABLE after that
// many requests, unanswered.
type fakeCP struct {
	hivemindv1.UnimplementedControlPlaneServer
	noStream   bool
	breakAfter int

	mu       sync.Mutex
	unary    int
	streamed int
	streams  int
	keys     map[string]int // idempotency key → requests seen with it
}

// counts reads how appends arrived: streams opened, appends on them, calls.
func (f *fakeCP) counts() (streams, streamed, unary int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams, f.streamed, f.unary
}

func (f *fakeCP) answer(req *hivemindv1.AppendEventRequest) *hivemindv1.AppendEventResponse {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys == nil {
		f.keys = map[string]int{}
	}
	f.keys[req.GetIdempotencyKey()]++
	return &hivemindv1.AppendEventResponse{Event: &hivemindv1.Event{Uri: req.GetUri(), Id: req.GetIdempotencyKey()}}
}

func (f *fakeCP) AppendEvent(_ context.Context, req *hivemindv1.AppendEventRequest) (*hivemindv1.AppendEventResponse, error) {
	f.mu.Lock()
	f.unary++
	f.mu.Unlock()
	return f.answer(req), nil
}

func (f *fakeCP) AppendEvents(stream hivemindv1.ControlPlane_AppendEventsServer) error {
	if f.noStream {
		return f.UnimplementedControlPlaneServer.AppendEvents(stream)
	}
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	for n := 1; ; n++ {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if f.breakAfter > 0 && n > f.breakAfter {
			return status.Error(codes.Unavailable, "going away")
		}
		f.mu.Lock()
		f.streamed++
		f.mu.Unlock()
		if req.GetEvent().GetType() == "bad" {
			if err := stream.Send(&hivemindv1.AppendEventsResponse{Seq: req.GetSeq(), Code: int32(codes.InvalidArgument), Message: "invalid type"}); err != nil {
				return err
			}
			continue
		}
		if err := stream.Send(&hivemindv1.AppendEventsResponse{Seq: req.GetSeq(), Appended: f.answer(req.GetEvent())}); err != nil {
			return err
		}
	}
}

func serveFake(t *testing.T, f *fakeCP) *Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hivemindv1.RegisterControlPlaneServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	c, err := New(Config{Endpoints: []string{l.Addr().String()}, Dial: grpcclient.Config{}, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// appendAll makes n concurrent appends and checks each got its own answer.
func appendAll(t *testing.T, c *Client, n int, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uri := fmt.Sprintf("/e/%d", i)
			req := &hivemindv1.AppendEventRequest{Type: "t", Uri: uri, Payload: payload}
			resp, err := c.AppendEvent(ctx, req)
			if err != nil {
				t.Errorf("append %s: %v", uri, err)
				return
			}
			if resp.GetEvent().GetUri() != uri || resp.GetEvent().GetId() != req.GetIdempotencyKey() {
				t.Errorf("append %s got the answer for %s", uri, resp.GetEvent().GetUri())
			}
		}()
	}
	wg.Wait()
}

func TestAppendsShareOneStream(t *testing.T) {
	f := &fakeCP{}
	c := serveFake(t, f)
	appendAll(t, c, 200, nil)
	if streams, streamed, unary := f.counts(); streams != 1 || streamed != 200 || unary != 0 {
		t.Fatalf("%d streams carried %d appends, %d calls; want 1 stream with all 200", streams, streamed, unary)
	}
	// A failed append fails alone, with the server's code.
	_, err := c.AppendEvent(context.Background(), &hivemindv1.AppendEventRequest{Type: "bad"})
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "invalid type" {
		t.Fatalf("bad append: %v", err)
	}
	appendAll(t, c, 10, nil)
	if streams, _, _ := f.counts(); streams != 1 {
		t.Fatalf("a failed append ended the stream (%d streams)", streams)
	}
}

func TestLargeEventsGoAsCalls(t *testing.T) {
	f := &fakeCP{}
	c := serveFake(t, f)
	appendAll(t, c, 3, bytes.Repeat([]byte{1}, maxStreamedEvent+1))
	if _, streamed, unary := f.counts(); unary != 3 || streamed != 0 {
		t.Fatalf("%d calls, %d streamed; want every large event as a call", unary, streamed)
	}
}

func TestOlderServerGetsCalls(t *testing.T) {
	f := &fakeCP{noStream: true}
	c := serveFake(t, f)
	appendAll(t, c, 50, nil)
	appendAll(t, c, 50, nil)
	if _, _, unary := f.counts(); unary != 100 {
		t.Fatalf("%d of 100 appends arrived as calls", unary)
	}
}

// When a stream breaks, the appends waiting on it are retried (with their
// keys) on a new stream.
func TestBrokenStreamIsReplacedAndAppendsRetried(t *testing.T) {
	f := &fakeCP{breakAfter: 30}
	c := serveFake(t, f)
	appendAll(t, c, 100, nil)
	if streams, _, _ := f.counts(); streams < 2 {
		t.Fatalf("%d streams; the stream should have broken and been reopened", streams)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, n := range f.keys {
		if n != 1 {
			t.Errorf("key %s answered %d times", key, n)
		}
	}
	if len(f.keys) != 100 {
		t.Errorf("%d keys seen, want 100", len(f.keys))
	}
}
