package dnsnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/backoff"
	"github.com/hivemind/hivemind/pkg/fsmevent"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/pkg/registry"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// ControlPlane is what the durable path reads; *cpclient.Client is one.
type ControlPlane interface {
	Range(ctx context.Context, req *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error)
	Watch(ctx context.Context, req *hivemindv1.WatchRequest, fn func(*hivemindv1.WatchResponse) error) error
	Status(ctx context.Context) (*hivemindv1.StatusResponse, error)
}

// Peer is another dns processor this one can bootstrap from.
type Peer struct {
	Name, Addr string
}

// rangeLimit is the page size of the bootstrap reads: the control plane's
// maximum, so a cluster of up to 10,000 hosts is read in one page, at one
// revision.
const rangeLimit = 10000

// watchTypes are the events the durable path follows. One watch on the
// whole tree, filtered by type, rather than one on /nodes/ and one on
// /members/: a single ordered stream means one resume revision (the
// state's), and a member.failed is applied in its place relative to the
// host's own writes, which the failed-versus-newer-record rule depends on.
// The price is the kv events of other prefixes (/app/, /srv/, a host's
// check keys), which are few and only advance the revision.
var watchTypes = []string{
	"kv.put", "kv.delete",
	registry.EventJoined, registry.EventAlive, registry.EventFailed, registry.EventLeft,
}

// syncer keeps the state in step with the control plane: it bootstraps
// from a consistent read, then follows the event log; when the control
// plane does not answer, it bootstraps from a peer dns processor instead
// and keeps trying the control plane.
type syncer struct {
	state   *hoststate.State
	cp      func() ControlPlane // nil until this node has joined
	peers   func() []Peer
	peer    func(addr string) (hivemindv1.DNSProcessorClient, error)
	log     *slog.Logger
	retry   time.Duration
	onReady func(from string)
	touched func() // an update arrived on the durable path
}

// run bootstraps and follows the control plane until ctx ends.
func (s *syncer) run(ctx context.Context) {
	reset, ready := false, false
	for ctx.Err() == nil {
		cp := s.cp()
		if cp == nil {
			cp = s.awaitJoin(ctx)
		}
		if cp != nil {
			rev, pages, err := s.bootstrap(ctx, cp, reset)
			if err == nil {
				ready = true
				s.onReady("controlplane")
				err = s.follow(ctx, cp, rev, pages)
				if ctx.Err() != nil {
					return
				}
				// History we have not read is gone: the next bootstrap
				// replaces the state instead of merging into it, so hosts
				// removed in the compacted revisions go too.
				reset = status.Code(err) == codes.OutOfRange
				s.log.Warn("control-plane watch ended; bootstrapping again", "err", err, "reset", reset)
				if reset {
					continue
				}
			} else {
				s.log.Warn("control plane unavailable for bootstrap", "err", err)
			}
		}
		if !ready {
			ready = s.bootstrapFromPeer(ctx)
		}
		if cp == nil {
			continue // awaitJoin has waited an interval already
		}
		if backoff.Sleep(ctx, s.retry) != nil {
			return
		}
	}
}

// joinPoll is how often a node that has not joined yet looks again.
const joinPoll = 50 * time.Millisecond

// awaitJoin waits up to one retry interval for this node to join (the
// control-plane client to appear) and returns it, nil if it did not. At
// start the join takes moments: sleeping a whole interval before the first
// bootstrap was most of the time a fresh processor took to serve.
func (s *syncer) awaitJoin(ctx context.Context) ControlPlane {
	deadline := time.Now().Add(s.retry)
	for time.Now().Before(deadline) {
		if backoff.Sleep(ctx, min(joinPoll, s.retry)) != nil {
			return nil
		}
		if cp := s.cp(); cp != nil {
			return cp
		}
	}
	return nil
}

// pages records, for each page of the bootstrap reads, the keys it covered
// and the revision it reflects. Pages may be read at different revisions;
// the watch starts after the oldest, and an event is already in the
// bootstrap when its key's page was read at or after its revision. So
// every key ends up as of the newest revision, none replayed twice.
type pages struct {
	spans  []span
	newest uint64
}

type span struct {
	prefix, after, last string // keys in (after, last], last "" for no bound
	rev                 uint64
}

// covered reports whether an event at rev on key is already reflected.
func (p *pages) covered(key string, rev uint64) bool {
	if p == nil || rev > p.newest {
		return false
	}
	for _, sp := range p.spans {
		if strings.HasPrefix(key, sp.prefix) && key > sp.after && (sp.last == "" || key <= sp.last) {
			return rev <= sp.rev
		}
	}
	return false
}

// readPrefix reads every key under prefix, linearizably, page by page.
func readPrefix(ctx context.Context, cp ControlPlane, prefix string, p *pages) ([]*hivemindv1.KeyValue, uint64, error) {
	var kvs []*hivemindv1.KeyValue
	oldest := uint64(0)
	after := ""
	for {
		resp, err := cp.Range(ctx, &hivemindv1.RangeRequest{Prefix: prefix, StartAfter: after, Limit: rangeLimit})
		if err != nil {
			return nil, 0, fmt.Errorf("range %s: %w", prefix, err)
		}
		rev := uint64(resp.GetHeader().GetRevision())
		if oldest == 0 || rev < oldest {
			oldest = rev
		}
		p.newest = max(p.newest, rev)
		sp := span{prefix: prefix, after: after, rev: rev}
		kvs = append(kvs, resp.GetKvs()...)
		if n := len(resp.GetKvs()); n > 0 {
			after = resp.GetKvs()[n-1].GetKey()
		}
		if !resp.GetMore() || len(resp.GetKvs()) == 0 {
			p.spans = append(p.spans, sp)
			return kvs, oldest, nil
		}
		sp.last = after
		p.spans = append(p.spans, sp)
	}
}

// bootstrap reads every host record and member from the control plane and
// restores the state from them. It returns the revision to watch after.
func (s *syncer) bootstrap(ctx context.Context, cp ControlPlane, reset bool) (uint64, *pages, error) {
	p := &pages{}
	members, r1, err := readPrefix(ctx, cp, registry.Prefix, p)
	if err != nil {
		return 0, nil, err
	}
	hosts, r2, err := readPrefix(ctx, cp, auth.NodesPrefix, p)
	if err != nil {
		return 0, nil, err
	}
	rev := min(r1, r2)
	b := hoststate.Bootstrap{Revision: rev, Removed: map[string]uint64{}, Failed: map[string]hlc.Timestamp{}, Reset: reset}
	for _, kv := range hosts {
		node := nodeOfHostKey(kv.GetKey())
		if node == "" {
			continue
		}
		u, err := decodeRecord(kv.GetValue(), node, 0)
		if err != nil {
			s.log.Warn("host record not served", "key", kv.GetKey(), "err", err)
			continue
		}
		if u.Op == hoststate.Delete {
			b.Removed[u.Host] = u.Seq
			continue
		}
		b.Hosts = append(b.Hosts, *u.Record)
	}
	var left []string
	for _, kv := range members {
		m, err := registry.Decode(kv.GetValue())
		if err != nil {
			s.log.Warn("member record not read", "key", kv.GetKey(), "err", err)
			continue
		}
		switch m.GetState() {
		case hivemindv1.MemberState_MEMBER_STATE_FAILED:
			// The key's stamp is the failure decision's: only state
			// changes rewrite a member's key.
			b.Failed[m.GetName()] = hlc.Timestamp(kv.GetHlc())
		case hivemindv1.MemberState_MEMBER_STATE_LEFT:
			left = append(left, m.GetName())
		}
	}
	s.state.Restore(b)
	for _, name := range left {
		if _, err := s.state.Apply(hoststate.Update{Op: hoststate.Delete, Host: name, Revision: rev}); err != nil {
			s.log.Warn("left member", "name", name, "err", err)
		}
	}
	s.log.Info("bootstrapped from the control plane", "revision", rev, "hosts", len(b.Hosts), "pages", len(p.spans))
	return rev, p, nil
}

// decodeRecord reads a stored HostRecord.
func decodeRecord(value []byte, node string, revision uint64) (hoststate.Update, error) {
	rec := &hivemindv1.HostRecord{}
	if err := proto.Unmarshal(value, rec); err != nil {
		return hoststate.Update{}, fmt.Errorf("not a HostRecord: %w", err)
	}
	return update(rec, node, revision)
}

// follow applies the event log from rev+1 until the watch fails for good.
func (s *syncer) follow(ctx context.Context, cp ControlPlane, rev uint64, p *pages) error {
	req := &hivemindv1.WatchRequest{
		StartRevision:    int64(rev + 1),
		Types:            watchTypes,
		ProgressInterval: durationpb.New(time.Second),
	}
	return cp.Watch(ctx, req, func(resp *hivemindv1.WatchResponse) error {
		for _, ev := range resp.GetEvents() {
			r := uint64(ev.GetRevision())
			if p != nil && r > p.newest {
				p = nil // past every page: nothing left to skip
			}
			if p.covered(ev.GetUri(), r) {
				s.state.Advance(r)
				continue
			}
			s.apply(ev)
		}
		if resp.GetProgress() {
			s.state.Advance(uint64(resp.GetHeader().GetRevision()))
		}
		return nil
	})
}

// apply applies one event of the log. Events about anything but host
// records and members only move the revision, and so do events the state
// machine did not emit (an appended kv.delete or member.failed): they are
// logged and skipped.
func (s *syncer) apply(ev *hivemindv1.Event) {
	r := uint64(ev.GetRevision())
	u, err := updateOf(ev)
	if err != nil {
		s.log.Warn("event not applied", "type", ev.GetType(), "uri", ev.GetUri(), "revision", r, "err", err)
	}
	if err != nil || u.Host == "" {
		s.state.Advance(r)
		return
	}
	if _, err := s.state.Apply(u); err != nil {
		s.log.Warn("event not applied", "type", ev.GetType(), "uri", ev.GetUri(), "revision", r, "err", err)
		s.state.Advance(r)
		return
	}
	s.touched()
}

// updateOf is the update an event of the log means for the hosts, with
// Host empty for an event about something else. State comes only from
// the key the state machine recorded in the event (package fsmevent),
// never from the type, uri or payload alone.
func updateOf(ev *hivemindv1.Event) (hoststate.Update, error) {
	r := uint64(ev.GetRevision())
	switch typ := ev.GetType(); {
	case typ == fsmevent.TypePut || typ == fsmevent.TypeDelete:
		host := nodeOfHostKey(ev.GetUri())
		if host == "" {
			return hoststate.Update{Revision: r}, nil
		}
		c, err := fsmevent.Key(ev)
		if err != nil {
			return hoststate.Update{}, err
		}
		if c.Deleted {
			// Not the host's own deregistration (that is a record with
			// gone set): someone removed the key, which no host seq orders.
			return hoststate.Update{Op: hoststate.Delete, Host: host, Revision: r}, nil
		}
		u, err := decodeRecord(c.KV.GetValue(), host, r)
		if err != nil {
			return hoststate.Update{}, fmt.Errorf("host record not served: %w", err)
		}
		return u, nil
	case typ == registry.EventFailed || typ == registry.EventAlive || typ == registry.EventJoined || typ == registry.EventLeft:
		m, err := fsmevent.Member(ev)
		if err != nil {
			return hoststate.Update{}, err
		}
		u := hoststate.Update{Host: m.GetName(), Revision: r}
		switch typ {
		case registry.EventFailed:
			// The key's stamp is the failure decision's, as at bootstrap.
			u.Op, u.Time = hoststate.Failed, hlc.Timestamp(ev.GetKv().GetHlc())
		case registry.EventLeft:
			u.Op = hoststate.Delete
		default:
			u.Op = hoststate.Alive
		}
		return u, nil
	}
	return hoststate.Update{Revision: r}, nil
}

// bootstrapFromPeer restores the state from the first bootstrapped peer
// dns processor that answers, and reports whether one did.
func (s *syncer) bootstrapFromPeer(ctx context.Context) bool {
	var errs []error
	for _, p := range s.peers() {
		b, err := s.peerView(ctx, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			continue
		}
		s.state.Restore(b)
		s.log.Info("bootstrapped from a peer dns processor", "peer", p.Name, "revision", b.Revision, "hosts", len(b.Hosts))
		s.onReady("peer " + p.Name)
		return true
	}
	if len(errs) > 0 {
		s.log.Warn("no peer dns processor to bootstrap from", "err", errors.Join(errs...))
	}
	return false
}

func (s *syncer) peerView(ctx context.Context, p Peer) (hoststate.Bootstrap, error) {
	c, err := s.peer(p.Addr)
	if err != nil {
		return hoststate.Bootstrap{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.HostSnapshot(cctx, &hivemindv1.HostSnapshotRequest{})
	if err != nil {
		return hoststate.Bootstrap{}, err
	}
	b := hoststate.Bootstrap{Revision: uint64(resp.GetRevision()), Removed: map[string]uint64{}}
	for i, rec := range resp.GetHosts() {
		u, err := update(rec, "", 0)
		if err != nil {
			return hoststate.Bootstrap{}, fmt.Errorf("hosts[%d]: %w", i, err)
		}
		if u.Op == hoststate.Delete {
			b.Removed[u.Host] = u.Seq
			continue
		}
		b.Hosts = append(b.Hosts, *u.Record)
	}
	return b, nil
}

// peerConns dials peer dns processors once each.
type peerConns struct {
	dial  func(addr string) (hivemindv1.DNSProcessorClient, func() error, error)
	mu    sync.Mutex
	conns map[string]hivemindv1.DNSProcessorClient
	close []func() error
}

func (pc *peerConns) get(addr string) (hivemindv1.DNSProcessorClient, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if c, ok := pc.conns[addr]; ok {
		return c, nil
	}
	c, closeFn, err := pc.dial(addr)
	if err != nil {
		return nil, err
	}
	if pc.conns == nil {
		pc.conns = map[string]hivemindv1.DNSProcessorClient{}
	}
	pc.conns[addr] = c
	pc.close = append(pc.close, closeFn)
	return c, nil
}

func (pc *peerConns) closeAll() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for _, f := range pc.close {
		_ = f()
	}
	pc.conns, pc.close = nil, nil
}
