package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
)

// Each request on the stream is an append of its own: good ones commit, a
// bad one fails alone with the field named, a retried key is applied once,
// and closing the sending side ends the stream after the last answer.
func TestAppendStreamAnswersEachRequest(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	stream, err := direct(t, c, c.Leader()).AppendEvents(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	reqs := map[uint64]*hivemindv1.AppendEventRequest{
		1: {Type: "t.ok", Uri: "/a/1", Payload: []byte("one")},
		2: {Type: "Bad Type"},
		3: {Type: "t.ok", Uri: "/a/3", IdempotencyKey: "same"},
		4: {Type: "t.ok", Uri: "/a/3", IdempotencyKey: "same"},
		5: nil,
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if err := stream.Send(&hivemindv1.AppendEventsRequest{Seq: seq, Event: reqs[seq]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*hivemindv1.AppendEventsResponse{}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream ended with %v after %d answers", err, len(got))
		}
		if _, dup := got[m.GetSeq()]; dup {
			t.Fatalf("seq %d answered twice", m.GetSeq())
		}
		got[m.GetSeq()] = m
	}
	if len(got) != 5 {
		t.Fatalf("%d answers, want 5: %v", len(got), got)
	}
	if a := got[1].GetAppended(); got[1].GetCode() != 0 || a.GetEvent().GetRevision() == 0 || string(a.GetEvent().GetPayload()) != "one" || a.GetHeader().GetRevision() == 0 {
		t.Fatalf("seq 1: %v", got[1])
	}
	if got[2].GetCode() != int32(codes.InvalidArgument) || !strings.Contains(got[2].GetMessage(), "type") || got[2].GetAppended() != nil {
		t.Fatalf("seq 2 (bad type): %v", got[2])
	}
	if got[5].GetCode() != int32(codes.InvalidArgument) || !strings.Contains(got[5].GetMessage(), "event") {
		t.Fatalf("seq 5 (no event): %v", got[5])
	}
	if a, b := got[3].GetAppended().GetEvent(), got[4].GetAppended().GetEvent(); a.GetId() == "" || a.GetId() != b.GetId() || a.GetRevision() != b.GetRevision() {
		t.Fatalf("a retried key was applied twice: %v and %v", a, b)
	}
}

// A member shutting down answers what is in flight, then ends its append
// streams with UNAVAILABLE, so that clients move on while it still serves.
func TestAppendStreamEndsWhenTheMemberCloses(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	lead := c.Leader()
	stream, err := direct(t, c, lead).AppendEvents(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for seq := uint64(1); seq <= n; seq++ {
		if err := stream.Send(&hivemindv1.AppendEventsRequest{Seq: seq, Event: &hivemindv1.AppendEventRequest{Type: "t.ok", Uri: fmt.Sprintf("/a/%d", seq)}}); err != nil {
			t.Fatal(err)
		}
	}
	answered := 0
	for answered < n {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d answers: %v", answered, err)
		}
		if m.GetCode() != 0 {
			t.Fatalf("seq %d: %s", m.GetSeq(), m.GetMessage())
		}
		answered++
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.StopNode(lead)
	}()
	defer func() { <-stopped }()
	m, err := stream.Recv()
	if err == nil {
		t.Fatalf("an answer nobody asked for: %v", m)
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("stream ended with %v, want UNAVAILABLE saying the member shuts down", err)
	}
}

// The client's appends share a stream per endpoint; with the leader killed
// under load they move to the next leader, and every acknowledged append is
// in the log exactly once.
func TestStreamedAppendsSurviveALeaderCrash(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	cl := c.Client(cpclient.Config{})
	old := c.Leader()
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		acked = map[string]int64{} // uri → revision
		wg    sync.WaitGroup
	)
	crashed := make(chan struct{})
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-crashed:
					if i > 20 {
						return
					}
				default:
				}
				uri := fmt.Sprintf("/w%d/%d", w, i)
				resp, err := cl.AppendEvent(cctx, &hivemindv1.AppendEventRequest{Type: "t.ok", Uri: uri})
				if err != nil {
					t.Errorf("append %s: %v", uri, err)
					return
				}
				mu.Lock()
				acked[uri] = resp.GetEvent().GetRevision()
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	c.CrashNode(old)
	close(crashed)
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[string]int{}
	wctx, wcancel := context.WithTimeout(cctx, 10*time.Second)
	defer wcancel()
	last := int64(0)
	for _, rev := range acked {
		last = max(last, rev)
	}
	err := cl.Watch(wctx, &hivemindv1.WatchRequest{StartRevision: 1, Prefix: "/w"}, func(r *hivemindv1.WatchResponse) error {
		done := false
		for _, e := range r.GetEvents() {
			seen[e.GetUri()]++
			done = done || e.GetRevision() >= last
		}
		if done {
			return io.EOF // every acknowledged append is at or before last
		}
		return nil
	})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("watch: %v", err)
	}
	for uri := range acked {
		if seen[uri] != 1 {
			t.Errorf("acknowledged append %s is in the log %d times", uri, seen[uri])
		}
	}
	if len(acked) < 400 {
		t.Errorf("only %d appends acknowledged", len(acked))
	}
}
