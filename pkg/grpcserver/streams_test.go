package grpcserver

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// holdDesc is a service with one server stream that lasts until its
// context ends and then returns nil, as a watch does.
func holdDesc(service string) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "Hold", ServerStreams: true, Handler: func(_ any, stream grpc.ServerStream) error {
			if err := stream.RecvMsg(&hivemindv1.InfoRequest{}); err != nil {
				return err
			}
			<-stream.Context().Done()
			return nil
		}}},
	}
}

func TestStopEndsStreamsWithUnavailable(t *testing.T) {
	srv, err := New(Config{Addr: "127.0.0.1:0", InternalServices: []string{"/test.Raft/"}})
	if err != nil {
		t.Fatal(err)
	}
	var impl any
	srv.GRPC().RegisterService(testDesc(), impl)
	srv.GRPC().RegisterService(holdDesc("test.Watch"), impl)
	srv.GRPC().RegisterService(holdDesc("test.Raft"), impl)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	conn, err := grpcclient.Dial(srv.Addr(), grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// open starts a stream; its end (the status) arrives on the channel.
	open := func(service string) <-chan error {
		cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+service+"/Hold")
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.SendMsg(&hivemindv1.InfoRequest{}); err != nil {
			t.Fatal(err)
		}
		cs.CloseSend()
		end := make(chan error, 1)
		go func() { end <- cs.RecvMsg(&hivemindv1.InfoResponse{}) }()
		return end
	}
	openCount := func() int {
		srv.open.mu.Lock()
		defer srv.open.mu.Unlock()
		return len(srv.open.open)
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	wantUnavailable := func(what string, end <-chan error, within time.Duration) {
		t.Helper()
		select {
		case err := <-end:
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("%s ended with %v, want UNAVAILABLE", what, err)
			}
		case <-time.After(within):
			t.Fatalf("%s still open after %v", what, within)
		}
	}

	watch, raft := open("test.Watch"), open("test.Raft")
	wait("both streams open", func() bool { return openCount() == 2 })

	// Drain ends client streams but not the members' own.
	srv.Drain()
	wantUnavailable("watch after Drain", watch, time.Second)
	if err := open("test.Watch"); status.Code(<-err) != codes.Unavailable {
		t.Fatal("a new watch was accepted while draining")
	}
	if openCount() != 1 {
		t.Fatalf("%d streams open after Drain, want the internal one", openCount())
	}
	if err := conn.Invoke(ctx, "/test.Svc/Ok", &hivemindv1.InfoRequest{}, &hivemindv1.InfoResponse{}); err != nil {
		t.Fatalf("unary call while draining: %v", err)
	}

	// Stop ends the rest at once, long before its own deadline.
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	start := time.Now()
	srv.Stop(stopCtx)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Stop with a stream open took %v, want under 1s", took)
	}
	wantUnavailable("internal stream after Stop", raft, time.Second)
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
