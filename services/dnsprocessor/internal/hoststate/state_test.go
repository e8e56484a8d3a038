package hoststate

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/hivemind/hivemind/pkg/hlc"
)

func rec(addr string) *Host {
	return &Host{
		Addrs:    []netip.Addr{netip.MustParseAddr(addr)},
		Services: []Service{{Name: "web", Port: 80, Health: Passing}},
	}
}

func put(host string, seq uint64, addr string) Update {
	return Update{Op: Put, Host: host, Seq: seq, Time: hlc.Timestamp(seq * 10), Record: rec(addr)}
}

func addrOf(t *testing.T, s *Snapshot, host string) string {
	t.Helper()
	h, ok := s.Host(host)
	if !ok {
		return ""
	}
	if h.Failed {
		return "failed:" + h.Addrs[0].String()
	}
	return h.Addrs[0].String()
}

func TestApplySeqOrdering(t *testing.T) {
	tests := []struct {
		name    string
		updates []Update
		changed []bool
		want    string // address served for host a, "" when none
	}{
		{"first put", []Update{put("a", 1, "10.0.0.1")}, []bool{true}, "10.0.0.1"},
		{"newer wins", []Update{put("a", 1, "10.0.0.1"), put("a", 2, "10.0.0.2")}, []bool{true, true}, "10.0.0.2"},
		{"stale dropped", []Update{put("a", 2, "10.0.0.2"), put("a", 1, "10.0.0.1")}, []bool{true, false}, "10.0.0.2"},
		{"same seq dropped", []Update{put("a", 2, "10.0.0.2"), put("a", 2, "10.0.0.9")}, []bool{true, false}, "10.0.0.2"},
		{"delete by host", []Update{put("a", 1, "10.0.0.1"), {Op: Delete, Host: "a", Seq: 2}}, []bool{true, true}, ""},
		{"stale delete dropped", []Update{put("a", 3, "10.0.0.3"), {Op: Delete, Host: "a", Seq: 2}}, []bool{true, false}, "10.0.0.3"},
		{"stale put after delete dropped", []Update{{Op: Delete, Host: "a", Seq: 5}, put("a", 4, "10.0.0.4")}, []bool{true, false}, ""},
		{"control-plane delete always applies", []Update{put("a", 7, "10.0.0.7"), {Op: Delete, Host: "a"}}, []bool{true, true}, ""},
		{"tombstone survives control-plane delete", []Update{put("a", 7, "10.0.0.7"), {Op: Delete, Host: "a"}, put("a", 7, "10.0.0.7")}, []bool{true, true, false}, ""},
		{"put after control-plane delete", []Update{put("a", 7, "10.0.0.7"), {Op: Delete, Host: "a"}, put("a", 8, "10.0.0.8")}, []bool{true, true, true}, "10.0.0.8"},
		{"delete of nothing", []Update{{Op: Delete, Host: "a"}}, []bool{false}, ""},
		{"failed hides", []Update{put("a", 1, "10.0.0.1"), {Op: Failed, Host: "a", Time: 100}}, []bool{true, true}, "failed:10.0.0.1"},
		{"alive shows", []Update{put("a", 1, "10.0.0.1"), {Op: Failed, Host: "a", Time: 100}, {Op: Alive, Host: "a"}}, []bool{true, true, true}, "10.0.0.1"},
		{"put stamped after failure revives", []Update{put("a", 1, "10.0.0.1"), {Op: Failed, Host: "a", Time: 15}, put("a", 2, "10.0.0.2")}, []bool{true, true, true}, "10.0.0.2"},
		{"put stamped before failure stays hidden", []Update{put("a", 1, "10.0.0.1"), {Op: Failed, Host: "a", Time: 100}, put("a", 2, "10.0.0.2")}, []bool{true, true, true}, "failed:10.0.0.2"},
		{"failure older than the record ignored", []Update{put("a", 2, "10.0.0.2"), {Op: Failed, Host: "a", Time: 5}}, []bool{true, false}, "10.0.0.2"},
		{"alive when alive", []Update{put("a", 1, "10.0.0.1"), {Op: Alive, Host: "a"}}, []bool{true, false}, "10.0.0.1"},
		{"names case-insensitive", []Update{put("A", 2, "10.0.0.2"), put("a", 1, "10.0.0.1")}, []bool{true, false}, "10.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			for i, u := range tt.updates {
				got, err := s.Apply(u)
				if err != nil {
					t.Fatalf("update %d: %v", i, err)
				}
				if got != tt.changed[i] {
					t.Errorf("update %d (%v seq %d): changed = %v, want %v", i, u.Op, u.Seq, got, tt.changed[i])
				}
			}
			if got := addrOf(t, s.Snapshot(), "a"); got != tt.want {
				t.Errorf("served %q, want %q", got, tt.want)
			}
		})
	}
}

func TestApplyInvalid(t *testing.T) {
	s := New()
	for _, u := range []Update{
		{Op: Put, Host: "a", Seq: 1},
		{Op: Put, Record: rec("10.0.0.1"), Seq: 1},
		{Op: 99, Host: "a"},
	} {
		if _, err := s.Apply(u); !errors.Is(err, ErrInvalid) {
			t.Errorf("Apply(%+v) = %v, want ErrInvalid", u, err)
		}
	}
}

// Both paths deliver the same updates in different orders, with repeats:
// every order ends in the same state.
func TestPathsConverge(t *testing.T) {
	var updates []Update
	for seq := uint64(1); seq <= 20; seq++ {
		for _, h := range []string{"a", "b", "c"} {
			updates = append(updates, put(h, seq, netip.AddrFrom4([4]byte{10, 0, byte(seq), h[0]}).String()))
		}
	}
	updates = append(updates, Update{Op: Delete, Host: "c", Seq: 21})

	reference := New()
	for _, u := range updates {
		if _, err := reference.Apply(u); err != nil {
			t.Fatal(err)
		}
	}
	want := dump(reference.Snapshot())

	rng := rand.New(rand.NewPCG(1, 2))
	for run := 0; run < 50; run++ {
		durable := updates
		fast := lossy(rng, updates)
		s := New()
		i, j := 0, 0
		for i < len(durable) || j < len(fast) {
			if j >= len(fast) || (i < len(durable) && rng.IntN(2) == 0) {
				u := durable[i]
				u.Revision = uint64(i + 1)
				s.Apply(u)
				i++
			} else {
				s.Apply(fast[j])
				j++
			}
		}
		if got := dump(s.Snapshot()); !reflect.DeepEqual(got, want) {
			t.Fatalf("run %d: %v, want %v", run, got, want)
		}
		if s.Revision() != uint64(len(updates)) {
			t.Fatalf("revision %d, want %d", s.Revision(), len(updates))
		}
	}
}

// lossy returns a random subset of us, shuffled: what the fast path
// delivers (it may lose and reorder).
func lossy(rng *rand.Rand, us []Update) []Update {
	var out []Update
	for _, u := range us {
		if rng.IntN(3) > 0 {
			out = append(out, u)
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func dump(s *Snapshot) map[string]string {
	m := map[string]string{}
	for _, h := range s.Hosts() {
		m[h.Name] = h.Addrs[0].String()
	}
	return m
}

func TestRestoreMergesBySeq(t *testing.T) {
	s := New()
	s.Apply(put("a", 5, "10.0.0.5")) // fresher, fast path only
	s.Apply(put("b", 1, "10.0.0.1")) // older than the view
	s.Apply(put("d", 1, "10.0.0.1")) // unknown to the view
	s.Apply(put("e", 3, "10.0.0.3")) // removed in the view

	s.Restore(Bootstrap{
		Revision: 42,
		Hosts: []Host{
			{Name: "a", Seq: 4, Addrs: rec("10.0.0.4").Addrs},
			{Name: "b", Seq: 2, Addrs: rec("10.0.0.2").Addrs},
			{Name: "c", Seq: 1, Time: 10, Addrs: rec("10.0.1.1").Addrs},
		},
		Removed: map[string]uint64{"e": 4},
		Failed:  map[string]hlc.Timestamp{"C": 20},
	})
	snap := s.Snapshot()
	got := map[string]string{}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		got[name] = addrOf(t, snap, name)
	}
	want := map[string]string{"a": "10.0.0.5", "b": "10.0.0.2", "c": "failed:10.0.1.1", "d": "10.0.0.1", "e": ""}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after restore %v, want %v", got, want)
	}
	if snap.Revision != 42 || s.Revision() != 42 {
		t.Errorf("revision %d/%d, want 42", snap.Revision, s.Revision())
	}
	// The tombstone from the view still drops a stale update.
	if changed, _ := s.Apply(put("e", 4, "10.0.0.4")); changed {
		t.Error("stale put for a removed host applied")
	}

	// A peer bootstrapping from this snapshot ends with the same view.
	peer := New()
	peer.Restore(snap.Bootstrap())
	if !reflect.DeepEqual(dumpAll(peer.Snapshot()), dumpAll(snap)) {
		t.Errorf("peer %v, want %v", dumpAll(peer.Snapshot()), dumpAll(snap))
	}
	if changed, _ := peer.Apply(put("e", 4, "10.0.0.4")); changed {
		t.Error("peer applied a stale put for a removed host")
	}
}

func dumpAll(s *Snapshot) map[string]string {
	m := map[string]string{}
	for _, h := range s.Hosts() {
		m[h.Name] = h.Addrs[0].String()
		if h.Failed {
			m[h.Name] = "failed:" + m[h.Name]
		}
	}
	return m
}

func TestRestoreReset(t *testing.T) {
	s := New()
	s.Apply(put("a", 9, "10.0.0.9"))
	s.Restore(Bootstrap{Revision: 3, Reset: true, Hosts: []Host{{Name: "b", Seq: 1, Addrs: rec("10.0.0.1").Addrs}}})
	if got := dumpAll(s.Snapshot()); !reflect.DeepEqual(got, map[string]string{"b": "10.0.0.1"}) {
		t.Errorf("after reset %v", got)
	}
	if changed, _ := s.Apply(put("a", 1, "10.0.0.1")); !changed {
		t.Error("a new epoch forgets old seqs, but a seq-1 put was dropped")
	}
}

func TestSnapshotsAreImmutable(t *testing.T) {
	s := New()
	r := rec("10.0.0.1")
	s.Apply(Update{Op: Put, Host: "a", Seq: 1, Record: r})
	before := s.Snapshot()
	r.Addrs[0] = netip.MustParseAddr("10.9.9.9") // the caller keeps its record
	s.Apply(Update{Op: Failed, Host: "a", Time: 1})
	if got := addrOf(t, before, "a"); got != "10.0.0.1" {
		t.Errorf("old snapshot changed: %q", got)
	}
	if got := addrOf(t, s.Snapshot(), "a"); got != "failed:10.0.0.1" {
		t.Errorf("new snapshot %q", got)
	}
}

func TestWatchWakesOnChangeOnly(t *testing.T) {
	s := New()
	snap, ch := s.Watch()
	s.Apply(put("a", 2, "10.0.0.2"))
	select {
	case <-ch:
	default:
		t.Fatal("watch not woken by a change")
	}
	next, ch := s.Watch()
	if next.Version <= snap.Version {
		t.Errorf("version %d after %d", next.Version, snap.Version)
	}
	s.Apply(put("a", 1, "10.0.0.1"))
	select {
	case <-ch:
		t.Fatal("watch woken by a stale update")
	default:
	}
}

func TestAdvanceMovesTheResumePointOnly(t *testing.T) {
	s := New()
	s.Apply(Update{Op: Put, Host: "a", Seq: 1, Record: rec("10.0.0.1"), Revision: 3})
	_, ch := s.Watch()
	s.Advance(9)
	s.Advance(5)
	if s.Revision() != 9 {
		t.Errorf("revision %d, want 9", s.Revision())
	}
	if s.Snapshot().Revision != 3 {
		t.Errorf("snapshot revision %d, want 3 (nothing served changed)", s.Snapshot().Revision)
	}
	select {
	case <-ch:
		t.Error("Advance published a snapshot")
	default:
	}
}

func TestChanged(t *testing.T) {
	s := New()
	s.Apply(put("a", 1, "10.0.0.1"))
	first := s.Snapshot()
	if got, ok := first.Changed(first); !ok || len(got) != 0 {
		t.Errorf("Changed(itself) = %v, %v; want none, true", got, ok)
	}
	s.Apply(put("b", 1, "10.0.0.2"))
	s.Apply(put("a", 2, "10.0.0.3"))
	s.Apply(put("a", 1, "10.0.0.4")) // stale: not a change
	s.Apply(Update{Op: Failed, Host: "b", Time: 99})
	second := s.Snapshot()
	got, ok := second.Changed(first)
	slices.Sort(got)
	if !ok || !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Changed = %v, %v; want [a b], true", got, ok)
	}
	if _, ok := first.Changed(second); ok {
		t.Error("Changed from a newer snapshot is known")
	}
	if _, ok := second.Changed(nil); ok {
		t.Error("Changed from nil is known")
	}
	if _, ok := second.Changed(New().Snapshot()); ok {
		t.Error("Changed from another state's snapshot is known")
	}
	// A view that repeats what is held changes nothing; one with a newer
	// record changes that host; one of a new epoch, anything.
	s.Restore(second.Bootstrap())
	if got, ok := s.Snapshot().Changed(second); !ok || len(got) != 0 {
		t.Errorf("Changed across a Restore of the same view = %v, %v; want none, true", got, ok)
	}
	b := second.Bootstrap()
	b.Hosts[0].Seq, b.Hosts[0].Addrs = 9, rec("10.0.0.99").Addrs // host a
	b.Failed = nil                                               // b recovers
	s.Restore(b)
	got, ok = s.Snapshot().Changed(second)
	slices.Sort(got)
	if !ok || !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Changed across a Restore = %v, %v; want [a b], true", got, ok)
	}
	beforeReset := s.Snapshot()
	b.Reset = true
	s.Restore(b)
	if _, ok := s.Snapshot().Changed(beforeReset); ok {
		t.Error("Changed across a Restore of a new epoch is known")
	}
	afterRestore := s.Snapshot()
	for seq := uint64(10); seq < 10+maxLog; seq++ {
		s.Apply(put("a", seq, "10.0.0.1"))
	}
	if _, ok := s.Snapshot().Changed(afterRestore); ok {
		t.Errorf("Changed over %d versions is known, the log keeps %d", maxLog, maxLog)
	}
	recent := s.Snapshot()
	s.Apply(put("c", 1, "10.0.0.9"))
	if got, ok := s.Snapshot().Changed(recent); !ok || !slices.Equal(got, []string{"c"}) {
		t.Errorf("Changed after the log was cut = %v, %v; want [c], true", got, ok)
	}
	if s.Snapshot().Len() != 3 {
		t.Errorf("Len %d, want 3", s.Snapshot().Len())
	}
}
