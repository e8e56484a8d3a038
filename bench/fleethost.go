package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/pkg/hostpublish"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/ticket"
)

// fleetNet is what the simulated hosts share: a few connections to each
// control-plane member and each dns processor (a real fleet has one per
// host; 10,000 per process would exceed the descriptor limit), and one
// control-plane client that carries each host's own token per call.
type fleetNet struct {
	secret  secret.Secret
	cpConns [][]*grpc.ClientConn // per member, a few connections
	dns     []string             // dns processors' gRPC addresses
	dnsConn map[string][]*grpc.ClientConn

	handshakeRetries atomic.Int64 // handshakes refused (rate, replay cache) and retried
	joinRetries      atomic.Int64
}

// simHost is one simulated host: its own name, node key, sessions and
// publisher (pkg/hostpublish, the agent's code), with an in-memory
// sequence instead of the agent's sequence file.
type simHost struct {
	idx    int
	name   string
	key    auth.NodeKey
	net    *fleetNet
	cpSess []*auth.CallSession // per control-plane member: a token is good only on the member that issued it
	dnsSes map[string]*auth.CallSession
	pub    *hostpublish.Publisher
	seq    atomic.Uint64
	clock  *hlc.Clock

	mu      sync.Mutex
	rec     *hivemindv1.HostRecord // content, before stamping
	change  uint32                 // the address's change id (see addrOf)
	failed  bool
	ticket  []byte
	epoch   uint64
	admitAt time.Time
}

func (h *simHost) Next() (uint64, error) { return h.seq.Add(1), nil }

// fleetHostName is the name of host i: its group (i mod 100) first, so that
// subscriptions select groups by prefix.
func fleetHostName(i int) string { return fmt.Sprintf("g%02d-%06d", i%100, i) }

func newSimHost(n *fleetNet, i int) *simHost {
	h := &simHost{idx: i, name: fleetHostName(i), key: auth.NewNodeKey(), net: n, clock: hlc.New(nil), dnsSes: map[string]*auth.CallSession{}}
	na := auth.NewNodeAuth(h.name, n.secret, h.key)
	for _, conns := range n.cpConns {
		h.cpSess = append(h.cpSess, na.Session(conns[i%len(conns)]))
	}
	for _, d := range n.dns {
		conns := n.dnsConn[d]
		h.dnsSes[d] = na.Session(conns[i%len(conns)])
	}
	h.rec = h.record(uint32(i), false)
	return h
}

// record is a realistic host record: 2 addresses, metadata, tags and 3
// services with checks. change is encoded in the first address.
func (h *simHost) record(change uint32, failed bool) *hivemindv1.HostRecord {
	h.change = change
	st := hivemindv1.HealthStatus_HEALTH_STATUS_PASSING
	out := "HTTP GET http://127.0.0.1/health: 200 OK"
	if failed {
		st, out = hivemindv1.HealthStatus_HEALTH_STATUS_CRITICAL, "dial tcp 127.0.0.1:8080: connect: connection refused"
	}
	now := timestamppb.Now()
	svc := func(name, id string, port uint32, kind string) *hivemindv1.ServiceInstance {
		return &hivemindv1.ServiceInstance{
			Name: name, Id: id, Port: port, Tags: []string{"v2", "rack-" + h.name[1:3]}, Weight: 1,
			Meta: map[string]string{"version": "2.4.1", "owner": "team-" + h.name[1:3]}, Status: st,
			Checks: []*hivemindv1.CheckState{{Name: name + "-" + kind, Kind: kind, Status: st, Output: out, UpdatedAt: now}},
		}
	}
	return &hivemindv1.HostRecord{
		Node:      h.name,
		Addresses: []string{addrOf(uint64(change)).String(), netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(h.idx >> 24), byte(h.idx >> 16), byte(h.idx >> 8), byte(h.idx)}).String()},
		Tags:      []string{"linux", "zone-" + h.name[1:3]},
		Meta:      map[string]string{"os": "debian-13", "kernel": "6.12.0", "rack": "r" + h.name[1:3], "dc": "bench"},
		Services: []*hivemindv1.ServiceInstance{
			svc("web", "web", 8080, "http"), svc("api", "api", 9090, "grpc"), svc("node-exporter", "node-exporter", 9100, "tcp"),
		},
	}
}

// join admits the host the way pkg/cluster.Node does: a handshake with
// the cluster secret (a join-only token), a Join signed with the node key
// and committed through raft; the ticket is checked against the issuing
// member's key. Refusals (too many handshakes, no leader) are retried.
func (h *simHost) join(ctx context.Context) error {
	req := &hivemindv1.JoinRequest{
		Name: h.name, Roles: &hivemindv1.Roles{Performs: []string{auth.RoleHost}, Requires: []string{auth.RoleControlPlane, auth.RoleDNS}},
		// Nothing listens there: the Host API is not simulated.
		GrpcAddress: fmt.Sprintf("127.%d.%d.%d:7101", 1+h.idx>>16, (h.idx>>8)&255, h.idx&255),
		Incarnation: uint64(time.Now().UnixNano()), IdempotencyKey: cpclient.NewIdempotencyKey(),
	}
	h.key.SignJoin(req)
	var last error
	for attempt := 0; attempt < 60; attempt++ {
		if attempt > 0 {
			if attempt == 3 && h.idx < 2 {
				progress("%s still not admitted: %v", h.name, last)
			}
			h.net.joinRetries.Add(1)
			if err := sleep(ctx, time.Duration(min(attempt, 10))*200*time.Millisecond); err != nil {
				return err
			}
		}
		sess := h.cpSess[(h.idx+attempt)%len(h.cpSess)]
		cctx, tok, err := sess.Context(ctx)
		if err != nil {
			h.net.handshakeRetries.Add(1)
			last = err
			continue
		}
		c, cancel := context.WithTimeout(cctx, 10*time.Second)
		resp, err := hivemindv1.NewMembershipClient(sess.Conn()).Join(c, req)
		cancel()
		if err != nil {
			if status.Code(err) == codes.Unauthenticated {
				sess.Refused(tok)
			}
			last = err
			continue
		}
		if _, err := ticket.Verify(resp.GetTicket(), issuers(resp.GetDigest()), h.name, resp.GetDigest().GetEpoch()); err != nil {
			return fmt.Errorf("%s: ticket: %w", h.name, err)
		}
		// The join-only token has done its work: the next call handshakes
		// again and gets a member's token.
		sess.Refused(tok)
		h.mu.Lock()
		h.ticket, h.epoch, h.admitAt = resp.GetTicket(), resp.GetDigest().GetEpoch(), time.Now()
		h.mu.Unlock()
		return nil
	}
	return fmt.Errorf("%s: not admitted: %w", h.name, last)
}

// issuers are the control-plane members' keys in the digest, as a node's
// copy of the registry gives them to gossip admission.
func issuers(d *hivemindv1.MembershipDigest) ticket.KeyOf {
	keys := map[string]ed25519.PublicKey{}
	for _, m := range d.GetMembers() {
		if slices.Contains(m.GetRoles().GetPerforms(), auth.RoleControlPlane) {
			keys[m.GetName()] = m.GetPublicKey()
		}
	}
	return ticket.Keys(keys)
}

// start runs the host's publisher (durable and fast path) and publishes
// its record.
func (h *simHost) start(ctx context.Context, log *slog.Logger) error {
	h.pub = hostpublish.New(hostpublish.Options{
		Node: h.name, Seq: h, Clock: h.clock,
		Store:   func() hostpublish.Store { return hostStore{h} },
		Targets: func() []string { return h.net.dns },
		Open:    h.openSink,
		Logger:  log,
	})
	h.pub.Start(ctx)
	h.mu.Lock()
	rec := h.rec
	h.mu.Unlock()
	_, err := h.pub.Publish(rec)
	return err
}

// set publishes a new record: the address carries change; failed turns
// every service and check critical.
func (h *simHost) set(change uint32, failed bool) (*hivemindv1.HostRecord, error) {
	h.mu.Lock()
	h.rec, h.failed = h.record(change, failed), failed
	rec := h.rec
	h.mu.Unlock()
	return h.pub.Publish(rec)
}

func (h *simHost) current() (change uint32, failed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.change, h.failed
}

// hostStore is the durable path: the host's own token, on a connection
// shared with other hosts, to its own control-plane member first (a
// follower forwards to the leader) and to the next while one is
// unavailable, as pkg/cpclient moves between endpoints. A token refused
// (the join-only one, or expired) is replaced by a fresh handshake once.
type hostStore struct{ h *simHost }

func (s hostStore) call(ctx context.Context, f func(context.Context, hivemindv1.ControlPlaneClient) error) error {
	var err error
	n := len(s.h.cpSess)
	for attempt := range 2 * n {
		sess := s.h.cpSess[(s.h.idx+attempt/2)%n]
		cctx, tok, herr := sess.Context(ctx)
		if herr != nil {
			err = herr
			attempt++ // this member does not answer: the next one
			continue
		}
		err = f(cctx, hivemindv1.NewControlPlaneClient(sess.Conn()))
		switch status.Code(err) {
		case codes.Unauthenticated:
			sess.Refused(tok)
		case codes.Unavailable:
			if ctx.Err() != nil {
				return err
			}
		default:
			return err
		}
	}
	return err
}

func (s hostStore) Put(ctx context.Context, req *hivemindv1.PutRequest) (resp *hivemindv1.PutResponse, err error) {
	err = s.call(ctx, func(c context.Context, cp hivemindv1.ControlPlaneClient) error {
		resp, err = cp.Put(c, req)
		return err
	})
	return resp, err
}

func (s hostStore) Delete(ctx context.Context, req *hivemindv1.DeleteRequest) (resp *hivemindv1.DeleteResponse, err error) {
	err = s.call(ctx, func(c context.Context, cp hivemindv1.ControlPlaneClient) error {
		resp, err = cp.Delete(c, req)
		return err
	})
	return resp, err
}

// openSink is the fast path: a PushHosts stream to the dns processor at
// addr, authenticated as this host, over a shared connection.
func (h *simHost) openSink(ctx context.Context, addr string) (hostpublish.Sink, error) {
	sess := h.dnsSes[addr]
	if sess == nil {
		return nil, fmt.Errorf("%s is not a dns processor of the bench", addr)
	}
	cctx, tok, err := sess.Context(ctx)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(cctx)
	stream, err := hivemindv1.NewDNSProcessorClient(sess.Conn()).PushHosts(sctx)
	if err != nil {
		cancel()
		if status.Code(err) == codes.Unauthenticated {
			sess.Refused(tok)
		}
		return nil, err
	}
	return &fleetSink{stream: stream, cancel: cancel, refused: func() { sess.Refused(tok) }}, nil
}

type fleetSink struct {
	stream  hivemindv1.DNSProcessor_PushHostsClient
	cancel  context.CancelFunc
	refused func()
}

func (s *fleetSink) Send(r *hivemindv1.HostRecord) error {
	if err := s.stream.Send(&hivemindv1.PushHostsRequest{Host: r}); err != nil {
		_, rerr := s.stream.CloseAndRecv()
		if status.Code(rerr) == codes.Unauthenticated {
			s.refused()
		}
		if rerr != nil && rerr != io.EOF {
			return rerr
		}
		return err
	}
	return nil
}

// Close half-closes the stream and cuts it if the processor does not
// answer at once (a restarted processor never will).
func (s *fleetSink) Close() error {
	done := make(chan struct{})
	go func() { _, _ = s.stream.CloseAndRecv(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	s.cancel()
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
