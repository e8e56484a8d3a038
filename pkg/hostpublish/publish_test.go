package hostpublish

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
)

// fakeStore is a control plane: last writer wins by HLC under /nodes/,
// and it can be made unavailable.
type fakeStore struct {
	mu      sync.Mutex
	down    bool
	kv      map[string]*hivemindv1.KeyValue
	applied []string // keys of applied puts, in order
}

func newFakeStore() *fakeStore { return &fakeStore{kv: map[string]*hivemindv1.KeyValue{}} }

func (s *fakeStore) setDown(d bool) { s.mu.Lock(); s.down = d; s.mu.Unlock() }

func (s *fakeStore) Put(_ context.Context, req *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, status.Error(codes.Unavailable, "no quorum")
	}
	old := s.kv[req.Key]
	if strings.HasPrefix(req.Key, "/nodes/") && old != nil && req.Hlc < old.Hlc {
		return &hivemindv1.PutResponse{Applied: false, Kv: old}, nil
	}
	kv := &hivemindv1.KeyValue{Key: req.Key, Value: req.Value, Hlc: req.Hlc}
	s.kv[req.Key] = kv
	s.applied = append(s.applied, req.Key)
	return &hivemindv1.PutResponse{Applied: true, Kv: kv}, nil
}

func (s *fakeStore) Delete(_ context.Context, req *hivemindv1.DeleteRequest) (*hivemindv1.DeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, status.Error(codes.Unavailable, "no quorum")
	}
	n := int64(0)
	if _, ok := s.kv[req.Key]; ok {
		n = 1
	}
	delete(s.kv, req.Key)
	return &hivemindv1.DeleteResponse{Deleted: n}, nil
}

func (s *fakeStore) host(t *testing.T) *hivemindv1.HostRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	kv := s.kv[Key("h1")]
	if kv == nil {
		return nil
	}
	r := &hivemindv1.HostRecord{}
	if err := proto.Unmarshal(kv.Value, r); err != nil {
		t.Fatal(err)
	}
	return r
}

func (s *fakeStore) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.applied {
		if k == key {
			n++
		}
	}
	return n
}

func (s *fakeStore) value(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kv, ok := s.kv[key]
	return string(kv.GetValue()), ok
}

type counter struct {
	mu sync.Mutex
	n  uint64
}

func (c *counter) Next() (uint64, error) { c.mu.Lock(); defer c.mu.Unlock(); c.n++; return c.n, nil }

// fakeSinks are dns processors; each remembers the seqs it received.
type fakeSinks struct {
	mu      sync.Mutex
	targets []string
	got     map[string][]*hivemindv1.HostRecord
	broken  map[string]bool
}

func newFakeSinks(targets ...string) *fakeSinks {
	return &fakeSinks{targets: targets, got: map[string][]*hivemindv1.HostRecord{}, broken: map[string]bool{}}
}

func (f *fakeSinks) Targets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.targets)
}

func (f *fakeSinks) Open(_ context.Context, addr string) (Sink, error) {
	return &fakeSink{f, addr}, nil
}

func (f *fakeSinks) last(addr string) *hivemindv1.HostRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.got[addr]
	if len(g) == 0 {
		return nil
	}
	return g[len(g)-1]
}

type fakeSink struct {
	f    *fakeSinks
	addr string
}

func (s *fakeSink) Send(r *hivemindv1.HostRecord) error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.f.broken[s.addr] {
		return errors.New("connection reset")
	}
	s.f.got[s.addr] = append(s.f.got[s.addr], proto.CloneOf(r))
	return nil
}

func (s *fakeSink) Close() error { return nil }

func newTestPublisher(t *testing.T, st *fakeStore, sinks *fakeSinks, tune func(*Options)) *Publisher {
	o := Options{
		Node: "h1", Store: func() Store { return st }, Seq: &counter{}, Clock: hlc.New(nil),
		BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond, Rescan: 10 * time.Millisecond,
	}
	if sinks != nil {
		o.Targets, o.Open = sinks.Targets, sinks.Open
	}
	if tune != nil {
		tune(&o)
	}
	p := New(o)
	p.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func rec(addr string) *hivemindv1.HostRecord {
	return &hivemindv1.HostRecord{Addresses: []string{addr}}
}

func TestEachRecordGetsANewerSeqAndHLC(t *testing.T) {
	p := newTestPublisher(t, newFakeStore(), nil, nil)
	var last *hivemindv1.HostRecord
	for i := range 5 {
		r, err := p.Publish(rec("10.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Node != "h1" {
			t.Errorf("node %q", r.Node)
		}
		if last != nil && (r.Seq <= last.Seq || r.Hlc <= last.Hlc) {
			t.Fatalf("record %d: seq %d hlc %d after seq %d hlc %d", i, r.Seq, r.Hlc, last.Seq, last.Hlc)
		}
		last = r
	}
}

func TestOutageWritesOnlyTheNewestThenReasserts(t *testing.T) {
	st := newFakeStore()
	p := newTestPublisher(t, st, nil, nil)
	p.SetApps(map[string]string{"a": "1", "b": "2"})
	r1, _ := p.Publish(rec("10.0.0.1"))
	waitUntil(t, "first record written", func() bool { return p.Written() >= r1.Seq })
	waitUntil(t, "apps written", func() bool { _, ok := st.value("/app/b"); return ok })
	before := st.count(Key("h1"))

	st.setDown(true)
	var newest *hivemindv1.HostRecord
	for _, a := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		newest, _ = p.Publish(rec(a))
	}
	waitUntil(t, "a failed write", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.reassert })
	// Simulate what the outage may have cost: the control plane lost the
	// app entries (restored from an old snapshot, an operator's mistake).
	st.mu.Lock()
	delete(st.kv, "/app/a")
	st.mu.Unlock()
	st.setDown(false)
	p.SetApps(map[string]string{"a": "1", "b": "2"}) // unchanged: only the re-assertion rewrites a
	waitUntil(t, "newest record written", func() bool { return p.Written() >= newest.Seq })
	waitUntil(t, "app a re-asserted", func() bool { v, ok := st.value("/app/a"); return ok && v == "1" })

	if got := st.count(Key("h1")) - before; got != 1 {
		t.Errorf("%d record writes after the outage, want 1 (the newest; stale ones are not queued)", got)
	}
	if got := st.host(t); got.Seq != newest.Seq || got.Addresses[0] != "10.0.0.4" {
		t.Errorf("stored record seq %d %v, want seq %d 10.0.0.4", got.Seq, got.Addresses, newest.Seq)
	}
	if n := st.count("/app/b"); n != 2 {
		t.Errorf("/app/b written %d times, want 2 (once, then re-asserted)", n)
	}
}

func TestReassertAfterOutageRestampsAWrittenRecord(t *testing.T) {
	st := newFakeStore()
	p := newTestPublisher(t, st, nil, nil)
	r1, _ := p.Publish(rec("10.0.0.1"))
	waitUntil(t, "record written", func() bool { return p.Written() >= r1.Seq })
	// The outage is seen by a write that fails (an app entry), then heals.
	st.setDown(true)
	p.SetApps(map[string]string{"a": "1"})
	waitUntil(t, "a failed write", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.reassert })
	st.setDown(false)
	waitUntil(t, "record re-asserted", func() bool { return p.Written() > r1.Seq })
	got := st.host(t)
	if got.Seq <= r1.Seq || got.Hlc <= r1.Hlc || !SameContent(got, r1) {
		t.Errorf("re-asserted %v, want the same content with a newer seq and hlc than %v", got, r1)
	}
}

func TestANewerStoredTimestampIsOvertaken(t *testing.T) {
	st := newFakeStore()
	ahead := uint64(hlc.FromTime(time.Now().Add(30 * time.Second)))
	st.kv[Key("h1")] = &hivemindv1.KeyValue{Key: Key("h1"), Value: []byte("old"), Hlc: ahead}
	p := newTestPublisher(t, st, nil, nil)
	r, _ := p.Publish(rec("10.0.0.1"))
	waitUntil(t, "record written", func() bool { return p.Written() >= r.Seq })
	got := st.host(t)
	if got.Hlc <= ahead || got.Addresses[0] != "10.0.0.1" {
		t.Errorf("stored hlc %d (want > %d) %v", got.Hlc, ahead, got.Addresses)
	}
}

func TestAppsWriteOnlyWhatChanged(t *testing.T) {
	st := newFakeStore()
	p := newTestPublisher(t, st, nil, nil)
	p.SetApps(map[string]string{"a": "1", "b": "2"})
	waitUntil(t, "apps written", func() bool { _, a := st.value("/app/a"); _, b := st.value("/app/b"); return a && b })
	p.SetApps(map[string]string{"a": "1", "c": "3"})
	waitUntil(t, "c written, b deleted", func() bool { _, b := st.value("/app/b"); _, c := st.value("/app/c"); return c && !b })
	if n := st.count("/app/a"); n != 1 {
		t.Errorf("/app/a written %d times, want 1", n)
	}
}

func TestFastPathStreamsToTwoAndRotatesOnFailure(t *testing.T) {
	st := newFakeStore()
	sinks := newFakeSinks("dns1:1", "dns2:1", "dns3:1")
	p := newTestPublisher(t, st, sinks, nil)
	r1, _ := p.Publish(rec("10.0.0.1"))
	streamedTo := func(seq uint64) []string {
		var out []string
		for _, a := range sinks.Targets() {
			if l := sinks.last(a); l != nil && l.Seq >= seq {
				out = append(out, a)
			}
		}
		return out
	}
	waitUntil(t, "two processors have r1", func() bool { return len(streamedTo(r1.Seq)) == 2 })
	first := streamedTo(r1.Seq)
	sinks.mu.Lock()
	sinks.broken[first[0]] = true
	sinks.mu.Unlock()
	r2, _ := p.Publish(rec("10.0.0.2"))
	waitUntil(t, "two working processors have r2", func() bool { return len(streamedTo(r2.Seq)) == 2 })
	if got := streamedTo(r2.Seq); slices.Contains(got, first[0]) {
		t.Errorf("r2 reached %v, including the broken %s", got, first[0])
	}
	if sinks.last("dns1:1") != nil && sinks.last("dns2:1") != nil && sinks.last("dns3:1") != nil {
		return // the third processor took the broken one's place
	}
	t.Errorf("no rotation: %v", streamedTo(0))
}

func TestStopPublishesGoneBothWays(t *testing.T) {
	st := newFakeStore()
	sinks := newFakeSinks("dns1:1", "dns2:1")
	o := Options{
		Node: "h1", Store: func() Store { return st }, Seq: &counter{}, Clock: hlc.New(nil),
		BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond, Rescan: 10 * time.Millisecond,
		Targets: sinks.Targets, Open: sinks.Open,
	}
	p := New(o)
	p.Start(context.Background())
	r1, _ := p.Publish(rec("10.0.0.1"))
	waitUntil(t, "both processors have r1", func() bool {
		return sinks.last("dns1:1").GetSeq() >= r1.Seq && sinks.last("dns2:1").GetSeq() >= r1.Seq
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	got := st.host(t)
	if !got.Gone || got.Seq <= r1.Seq || got.Addresses[0] != "10.0.0.1" {
		t.Errorf("stored after stop: %v, want gone with seq > %d", got, r1.Seq)
	}
	for _, a := range []string{"dns1:1", "dns2:1"} {
		if l := sinks.last(a); !l.Gone || l.Seq != got.Seq {
			t.Errorf("%s last got %v, want the gone record", a, l)
		}
	}
	if _, err := p.Publish(rec("10.0.0.9")); !errors.Is(err, ErrStopped) {
		t.Errorf("Publish after Stop: %v, want ErrStopped", err)
	}
}
