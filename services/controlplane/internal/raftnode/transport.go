package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/grpcserver"
)

// Transport carries raft messages to peers. Send must not block: a message
// that cannot be sent is dropped and reported, and raft resends.
type Transport interface {
	Send(msgs []*raftpb.Message)
	AddPeer(id uint64, addr string)
	RemovePeer(id uint64)
	Close()
}

// Reporter is what a transport tells the node about delivery.
type Reporter interface {
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
	// ClusterID stamps outgoing streams (see cluster.go).
	ClusterID() uint64
}

// MaxMessageSize bounds one raft message (a snapshot travels as one) and
// one record of the write-ahead log. It is the raft limit: larger than any
// request a member accepts from a client, so a message larger than a
// request travels in fragments (see FrameBytes), joined again only on the
// Raft service, whose callers are authenticated members.
const MaxMessageSize = 512 << 20

// FrameBytes bounds the raft data of one Raft/Send request: small messages
// share a request, a larger one is cut into fragments. Every member reads
// requests of this size, whatever its --max-request-bytes.
const FrameBytes = grpcserver.MinMaxRequestBytes

// GRPCTransport sends raft messages over one long-lived client stream per
// peer (hivemind.raft.v1.Raft/Send).
type GRPCTransport struct {
	dial   grpcclient.Config
	report Reporter
	log    *slog.Logger

	mu    sync.Mutex
	peers map[uint64]*peer
}

// NewGRPCTransport returns a transport dialling peers with dial.
func NewGRPCTransport(dial grpcclient.Config, report Reporter, log *slog.Logger) *GRPCTransport {
	dial.MaxRetries = -1
	dial.MaxRecvMsgSize = MaxMessageSize
	return &GRPCTransport{dial: dial, report: report, log: log, peers: map[uint64]*peer{}}
}

type peer struct {
	id     uint64
	addr   string
	queue  chan *raftpb.Message
	cancel context.CancelFunc
	done   chan struct{}
}

// queueLen bounds the messages waiting for one peer; beyond it the peer is
// reported unreachable and raft slows down for it.
const queueLen = 4096

// AddPeer implements Transport. Adding a known peer with a new address
// reconnects to it.
func (t *GRPCTransport) AddPeer(id uint64, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		if p.addr == addr {
			return
		}
		p.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &peer{id: id, addr: addr, queue: make(chan *raftpb.Message, queueLen), cancel: cancel, done: make(chan struct{})}
	t.peers[id] = p
	go t.run(ctx, p)
}

// RemovePeer implements Transport.
func (t *GRPCTransport) RemovePeer(id uint64) {
	t.mu.Lock()
	p, ok := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if ok {
		p.cancel()
		<-p.done
	}
}

// Send implements Transport.
func (t *GRPCTransport) Send(msgs []*raftpb.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		p, ok := t.peers[m.GetTo()]
		if !ok {
			continue
		}
		select {
		case p.queue <- m:
		default:
			t.report.ReportUnreachable(m.GetTo())
			if m.GetType() == raftpb.MsgSnap {
				t.report.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
			}
		}
	}
}

// Close implements Transport.
func (t *GRPCTransport) Close() {
	t.mu.Lock()
	peers := t.peers
	t.peers = map[uint64]*peer{}
	t.mu.Unlock()
	for _, p := range peers {
		p.cancel()
		<-p.done
	}
}

func (t *GRPCTransport) run(ctx context.Context, p *peer) {
	defer close(p.done)
	var (
		conn   *grpc.ClientConn
		stream raftv1.Raft_SendClient
		err    error
	)
	// After a failure the connection is dropped and dialled again, so the
	// peer's name is resolved afresh (a restarted container may have a new
	// address; gRPC's own re-resolution is rate-limited to every 30s).
	reset := func() {
		if stream != nil {
			_, _ = stream.CloseAndRecv()
			stream = nil
		}
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	defer reset()
	backoff := 20 * time.Millisecond
	for {
		var first *raftpb.Message
		select {
		case <-ctx.Done():
			return
		case first = <-p.queue:
		}
		batch := []*raftpb.Message{first}
		size := proto.Size(first)
	drain:
		for len(batch) < 512 && size < 4<<20 {
			select {
			case m := <-p.queue:
				batch = append(batch, m)
				size += proto.Size(m)
			default:
				break drain
			}
		}
		if conn == nil {
			conn, err = grpcclient.Dial(p.addr, t.dial)
		}
		if err == nil && stream == nil {
			sctx := metadata.AppendToOutgoingContext(ctx, clusterIDKey, strconv.FormatUint(t.report.ClusterID(), 16))
			stream, err = raftv1.NewRaftClient(conn).Send(sctx)
		}
		if err == nil {
			err = sendFrames(stream, batch)
		}
		if err != nil {
			reset()
			err = nil
			t.failed(p.id, batch)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 20 * time.Millisecond
		for _, m := range batch {
			if m.GetType() == raftpb.MsgSnap {
				t.report.ReportSnapshot(p.id, raft.SnapshotFinish)
			}
		}
	}
}

func (t *GRPCTransport) failed(id uint64, batch []*raftpb.Message) {
	t.report.ReportUnreachable(id)
	for _, m := range batch {
		if m.GetType() == raftpb.MsgSnap {
			t.report.ReportSnapshot(id, raft.SnapshotFailure)
		}
	}
}

// sendFrames sends a batch as requests of at most FrameBytes of raft data:
// messages in order, small ones together, a larger one as fragments. A
// failure part way leaves the receiver with a partial message, which it
// drops when the stream ends; the sender then reconnects and raft resends.
func sendFrames(stream raftv1.Raft_SendClient, batch []*raftpb.Message) error {
	for _, req := range sendRequests(batch, FrameBytes) {
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	return nil
}

// perMessage is what a message adds to a request beside its bytes: the
// field tag and a length of up to 5 bytes.
const perMessage = 6

// sendRequests splits batch into requests of at most frame bytes of raft data.
func sendRequests(batch []*raftpb.Message, frame int) []*raftv1.SendRequest {
	var (
		out  []*raftv1.SendRequest
		cur  = &raftv1.SendRequest{}
		size int
	)
	flush := func() {
		if len(cur.Messages) > 0 {
			out = append(out, cur)
			cur, size = &raftv1.SendRequest{}, 0
		}
	}
	for _, m := range batch {
		b, err := proto.Marshal(m)
		if err != nil {
			continue
		}
		if len(b)+perMessage > frame {
			flush()
			for off := 0; off < len(b); off += frame {
				end := min(off+frame, len(b))
				out = append(out, &raftv1.SendRequest{Fragment: b[off:end], LastFragment: end == len(b)})
			}
			continue
		}
		if size+len(b)+perMessage > frame {
			flush()
		}
		cur.Messages = append(cur.Messages, b)
		size += len(b) + perMessage
	}
	flush()
	return out
}

// ErrMessageTooLarge is returned by ServeSend when a peer's fragments add
// up to more than the raft limit, MaxMessageSize.
var ErrMessageTooLarge = errors.New("raft message larger than the raft limit")

// reassembly joins the fragments of one message, up to limit bytes.
type reassembly struct {
	limit int
	buf   []byte
}

// add takes one request's fragment and returns the whole message once its
// last fragment has arrived.
func (r *reassembly) add(req *raftv1.SendRequest) ([]byte, error) {
	frag := req.GetFragment()
	if len(r.buf)+len(frag) > r.limit {
		r.buf = nil
		return nil, fmt.Errorf("%w: more than %d bytes", ErrMessageTooLarge, r.limit)
	}
	r.buf = append(r.buf, frag...)
	if !req.GetLastFragment() {
		return nil, nil
	}
	b := r.buf
	r.buf = nil
	return b, nil
}

// ServeSend is the receiving side of Raft/Send: it steps every message of
// the stream into the node until the peer closes it. A message whose
// sender is not from (the raft id of the authenticated peer; 0 when the
// server does not authenticate) ends the stream with PERMISSION_DENIED
// before it reaches raft.
func (n *Node) ServeSend(stream raftv1.Raft_SendServer, from uint64) error {
	var theirs uint64
	if md, ok := metadata.FromIncomingContext(stream.Context()); ok && len(md.Get(clusterIDKey)) == 1 {
		theirs, _ = strconv.ParseUint(md.Get(clusterIDKey)[0], 16, 64)
	}
	if err := n.acceptCluster(theirs); err != nil {
		n.log.Warn("raft: refusing a peer", "err", err)
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return receive(stream, func(m *raftpb.Message) error {
		if from != 0 && m.GetFrom() != from {
			n.log.Warn("raft: refusing a message with a sender other than the authenticated peer", "from", m.GetFrom(), "peer", from, "type", m.GetType())
			return status.Errorf(codes.PermissionDenied, "raft message from %x on a stream authenticated as member %x: a peer sends only as itself", m.GetFrom(), from)
		}
		return n.Step(stream.Context(), m)
	})
}

// receive reads a Raft/Send stream until the peer closes it, joining
// fragments, and hands every message to step in order.
func receive(stream raftv1.Raft_SendServer, step func(*raftpb.Message) error) error {
	pieces := reassembly{limit: MaxMessageSize}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&raftv1.SendResponse{})
		}
		if err != nil {
			return err
		}
		msgs := req.GetMessages()
		if len(req.GetFragment()) > 0 || req.GetLastFragment() {
			if len(msgs) > 0 {
				return status.Error(codes.InvalidArgument, "fragment: a request carries messages or a fragment, not both")
			}
			b, err := pieces.add(req)
			if err != nil {
				return status.Error(codes.ResourceExhausted, err.Error())
			}
			if b == nil {
				continue
			}
			msgs = [][]byte{b}
		}
		for _, b := range msgs {
			m := &raftpb.Message{}
			if err := proto.Unmarshal(b, m); err != nil {
				return status.Errorf(codes.InvalidArgument, "messages: %v", err)
			}
			if err := step(m); err != nil {
				return err
			}
		}
	}
}
