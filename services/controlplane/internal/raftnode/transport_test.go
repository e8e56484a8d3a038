package raftnode

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/grpcserver"
)

func msgOf(size int, index uint64) *raftpb.Message {
	return &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Index: proto.Uint64(index),
		Entries: []*raftpb.Entry{{Index: proto.Uint64(index), Data: bytes.Repeat([]byte{byte(index)}, size)}}}
}

// Requests never carry more than a frame of raft data; joining them again
// gives back every message, in order, whole.
func TestSendRequestsFrameAndReassemble(t *testing.T) {
	const frame = 1000
	batch := []*raftpb.Message{msgOf(10, 1), msgOf(20, 2), msgOf(2500, 3), msgOf(400, 4), msgOf(400, 5), msgOf(400, 6), msgOf(frame, 7)}
	reqs := sendRequests(batch, frame)

	var got []*raftpb.Message
	r := reassembly{limit: MaxMessageSize}
	for i, req := range reqs {
		n := len(req.GetFragment())
		for _, b := range req.GetMessages() {
			n += len(b) + perMessage
		}
		if n > frame {
			t.Errorf("request %d carries %d bytes, more than a frame of %d", i, n, frame)
		}
		if len(req.GetMessages()) > 0 && len(req.GetFragment()) > 0 {
			t.Errorf("request %d carries messages and a fragment", i)
		}
		msgs := req.GetMessages()
		if len(req.GetFragment()) > 0 {
			b, err := r.add(req)
			if err != nil {
				t.Fatal(err)
			}
			if b == nil {
				continue
			}
			msgs = [][]byte{b}
		}
		for _, b := range msgs {
			m := &raftpb.Message{}
			if err := proto.Unmarshal(b, m); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			got = append(got, m)
		}
	}
	if len(got) != len(batch) {
		t.Fatalf("got %d messages back, want %d", len(got), len(batch))
	}
	for i := range batch {
		if !proto.Equal(got[i], batch[i]) {
			t.Errorf("message %d differs after the trip", i)
		}
	}
	// The 2.5 KB message and the one exactly a frame long travel in pieces;
	// the small ones share requests.
	frags := 0
	for _, req := range reqs {
		if len(req.GetFragment()) > 0 {
			frags++
		}
	}
	if frags < 4 || len(reqs) > frags+4 {
		t.Errorf("%d requests of which %d fragments; want the large messages cut and the small ones grouped", len(reqs), frags)
	}
}

// A peer cannot make a member hold more than the raft limit of fragments.
func TestReassemblyRefusesMoreThanTheRaftLimit(t *testing.T) {
	r := reassembly{limit: 10 << 10}
	chunk := make([]byte, 1<<10)
	for i := range 10 {
		if _, err := r.add(&raftv1.SendRequest{Fragment: chunk}); err != nil {
			t.Fatalf("fragment %d, within the limit: %v", i, err)
		}
	}
	if _, err := r.add(&raftv1.SendRequest{Fragment: chunk}); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("a fragment beyond %d bytes: %v, want ErrMessageTooLarge", r.limit, err)
	}
	if r.buf != nil {
		t.Fatal("the refused fragments are still held")
	}
}

// recorder is a Raft service that keeps what arrives, behind the smallest
// receive limit a member can have.
type recorder struct {
	raftv1.UnimplementedRaftServer
	mu   sync.Mutex
	msgs []*raftpb.Message
}

func (r *recorder) Send(stream raftv1.Raft_SendServer) error {
	return receive(stream, func(m *raftpb.Message) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.msgs = append(r.msgs, m)
		return nil
	})
}

func (r *recorder) received() []*raftpb.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*raftpb.Message(nil), r.msgs...)
}

type reports struct {
	mu       sync.Mutex
	finished int
	failed   int
}

func (r *reports) ReportUnreachable(uint64) {}
func (r *reports) ReportSnapshot(_ uint64, st raft.SnapshotStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st == raft.SnapshotFinish {
		r.finished++
	} else {
		r.failed++
	}
}
func (r *reports) ClusterID() uint64 { return 1 }

// A snapshot larger than the 4 MiB public request limit, and an append
// larger than a request, cross a real gRPC connection whose server reads
// at most 1 MiB plus the envelope per request, arrive whole and in order
// with the small messages around them, and the snapshot is reported sent.
func TestSnapshotLargerThanARequestCrossesTheTransport(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(grpcserver.MinMaxRequestBytes + grpcserver.EnvelopeBytes))
	rec := &recorder{}
	raftv1.RegisterRaftServer(srv, rec)
	go srv.Serve(lis)
	defer srv.Stop()

	rep := &reports{}
	tr := NewGRPCTransport(grpcclient.Config{}, rep, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer tr.Close()
	tr.AddPeer(2, lis.Addr().String())

	data := make([]byte, 5<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	snap := &raftpb.Message{Type: raftpb.MsgSnap.Enum(), To: proto.Uint64(2), From: proto.Uint64(1),
		Snapshot: &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(40), Term: proto.Uint64(3)}}}
	sent := []*raftpb.Message{
		{Type: raftpb.MsgHeartbeat.Enum(), To: proto.Uint64(2), From: proto.Uint64(1)},
		snap,
		msgOf(2<<20, 41),
		{Type: raftpb.MsgHeartbeat.Enum(), To: proto.Uint64(2), From: proto.Uint64(1), Commit: proto.Uint64(41)},
	}
	tr.Send(sent)

	deadline := time.Now().Add(30 * time.Second)
	for len(rec.received()) < len(sent) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := rec.received()
	if len(got) != len(sent) {
		t.Fatalf("%d of %d messages arrived", len(got), len(sent))
	}
	for i := range sent {
		if !proto.Equal(got[i], sent[i]) {
			t.Errorf("message %d (%v) differs after the trip", i, sent[i].GetType())
		}
	}
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.finished != 1 || rep.failed != 0 {
		t.Errorf("snapshot reports: %d finished, %d failed; want 1, 0", rep.finished, rep.failed)
	}
}
