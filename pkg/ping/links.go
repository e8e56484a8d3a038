package ping

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
	"github.com/hivemind/hivemind/pkg/hlc"
)

// LinkConfig says how often links are observed and how long a change must
// last before it is written. A link observed down DownAfter times in a row
// is written down, and up UpAfter times in a row up: a change is written
// at most (N-1)×Interval after gossip shows it, and a link that flaps
// faster than that is not written at all.
type LinkConfig struct {
	// Interval between observations of the gossip view. Default 1s.
	Interval time.Duration
	// DownAfter and UpAfter are the consecutive observations a change
	// needs. Default 3 each.
	DownAfter int
	UpAfter   int
	// WriteTimeout bounds one write. Default 5s.
	WriteTimeout time.Duration
}

// TestLinkConfig is a preset for tests: observed every 150ms, written
// after 3 observations. Like the default (3 s against gossip's 200 ms
// probes), the settling time spans more than one probe of gossip's test
// preset, so one missed probe is not a link change.
func TestLinkConfig() LinkConfig {
	return LinkConfig{Interval: 150 * time.Millisecond, DownAfter: 3, UpAfter: 3, WriteTimeout: time.Second}
}

func (c LinkConfig) withDefaults() LinkConfig {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.DownAfter <= 0 {
		c.DownAfter = 3
	}
	if c.UpAfter <= 0 {
		c.UpAfter = 3
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	return c
}

// Link is the value of /nodes/<node>/links/<peer>, as JSON.
type Link struct {
	Peer      string `json:"peer"`
	Reachable bool   `json:"reachable"`
	// RTT of the last gossip probe of the peer when the state was
	// written, as a Go duration ("1.2ms"); empty when none was answered.
	RTT string `json:"rtt,omitempty"`
	// Since is when this node first observed the state.
	Since time.Time `json:"since"`
}

// LinkKey is the key of node's link to peer.
func LinkKey(node, peer string) string { return "/nodes/" + node + "/links/" + peer }

// linkTracker turns observations into the link states to write. It does
// no I/O and reads no clock.
type linkTracker struct {
	cfg   LinkConfig
	links map[string]*linkState
}

type linkState struct {
	written   *Link // last value stored, nil if none
	reachable bool  // state currently observed
	streak    int   // consecutive observations of it
	since     time.Time
	rtt       time.Duration
}

func newLinkTracker(cfg LinkConfig) *linkTracker {
	return &linkTracker{cfg: cfg, links: map[string]*linkState{}}
}

// observe records one observation of a peer.
func (t *linkTracker) observe(peer string, reachable bool, rtt time.Duration, now time.Time) {
	l, ok := t.links[peer]
	if !ok || l.reachable != reachable || l.streak == 0 {
		if !ok {
			l = &linkState{}
			t.links[peer] = l
		}
		l.reachable, l.streak, l.since = reachable, 0, now
	}
	l.streak++
	l.rtt = rtt
}

// known sets what the store already holds (read back at start), so an
// unchanged link is not written again after a restart.
func (t *linkTracker) known(v Link) {
	l, ok := t.links[v.Peer]
	if !ok {
		l = &linkState{}
		t.links[v.Peer] = l
	}
	l.written = &v
}

// due lists the links whose settled state differs from what is stored.
func (t *linkTracker) due() []Link {
	var out []Link
	for peer, l := range t.links {
		need := t.cfg.UpAfter
		if !l.reachable {
			need = t.cfg.DownAfter
		}
		if l.streak < need || (l.written != nil && l.written.Reachable == l.reachable) {
			continue
		}
		v := Link{Peer: peer, Reachable: l.reachable, Since: l.since.UTC()}
		if l.rtt > 0 {
			v.RTT = l.rtt.String()
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// stored records a successful write.
func (t *linkTracker) stored(v Link) {
	if l, ok := t.links[v.Peer]; ok {
		l.written = &v
	}
}

// forget stops observing a peer that left: it is no longer probed. Its
// record stays as last written, so a peer that comes back as it was is
// not written again.
func (t *linkTracker) forget(peer string) {
	if l, ok := t.links[peer]; ok {
		l.streak = 0
	}
}

// linkRecorder observes the gossip view and writes link changes.
type linkRecorder struct {
	s       *Service
	c       Cluster
	tracker *linkTracker
	loaded  bool // the stored links were read back
}

func newLinkRecorder(s *Service, c Cluster) *linkRecorder {
	return &linkRecorder{s: s, c: c, tracker: newLinkTracker(s.cfg.Links)}
}

func (s *Service) recordLinks(ctx context.Context, r *linkRecorder) {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Links.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.observe(s.cfg.Now())
		r.flush(ctx)
	}
}

// observe takes one look at the gossip view. A peer is reachable when
// gossip has it alive; suspect and dead peers are not; peers that left are
// no longer observed (their record stays as last written).
func (r *linkRecorder) observe(now time.Time) {
	for name, m := range r.c.View.Members() {
		if name == r.s.cfg.Name {
			continue
		}
		if m.State == gossip.StateLeft {
			r.tracker.forget(name)
			continue
		}
		r.tracker.observe(name, m.State == gossip.StateAlive, m.RTT, now)
	}
}

// flush writes what is due, once the store is there; what fails is due
// again at the next observation.
func (r *linkRecorder) flush(ctx context.Context) {
	if r.c.Store == nil {
		return
	}
	st := r.c.Store()
	if st == nil {
		return
	}
	if !r.loaded {
		if err := r.load(ctx, st); err != nil {
			r.s.log.Debug("links: reading stored links", "err", err)
			return
		}
		r.loaded = true
	}
	for _, v := range r.tracker.due() {
		if err := r.write(ctx, st, v); err != nil {
			r.s.log.Warn("links: write failed; retrying at the next observation", "peer", v.Peer, "reachable", v.Reachable, "err", err)
			return
		}
		r.tracker.stored(v)
		r.s.log.Info("links: link changed", "peer", v.Peer, "reachable", v.Reachable, "rtt", v.RTT)
	}
}

func (r *linkRecorder) load(ctx context.Context, st Store) error {
	ctx, cancel := context.WithTimeout(ctx, r.s.cfg.Links.WriteTimeout)
	defer cancel()
	prefix := LinkKey(r.s.cfg.Name, "")
	after := ""
	for {
		resp, err := st.Range(ctx, &hivemindv1.RangeRequest{Prefix: prefix, StartAfter: after})
		if err != nil {
			return err
		}
		for _, kv := range resp.GetKvs() {
			var v Link
			if json.Unmarshal(kv.GetValue(), &v) == nil && v.Peer == strings.TrimPrefix(kv.GetKey(), prefix) {
				r.tracker.known(v)
			}
			if _, err := r.s.clock.Update(hlc.Timestamp(kv.GetHlc())); err != nil {
				r.s.log.Debug("links: stored timestamp ahead", "err", err)
			}
			after = kv.GetKey()
		}
		if !resp.GetMore() || len(resp.GetKvs()) == 0 {
			return nil
		}
	}
}

func (r *linkRecorder) write(ctx context.Context, st Store, v Link) error {
	ctx, cancel := context.WithTimeout(ctx, r.s.cfg.Links.WriteTimeout)
	defer cancel()
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	resp, err := st.Put(ctx, &hivemindv1.PutRequest{Key: LinkKey(r.s.cfg.Name, v.Peer), Value: b, Hlc: uint64(r.s.clock.Now())})
	if err != nil {
		return err
	}
	if !resp.GetApplied() {
		// A newer timestamp is stored (our clock was behind): catch up,
		// and the next observation writes again.
		_, _ = r.s.clock.Update(hlc.Timestamp(resp.GetKv().GetHlc()))
		return fmt.Errorf("a newer value of %s is stored", LinkKey(r.s.cfg.Name, v.Peer))
	}
	return nil
}
