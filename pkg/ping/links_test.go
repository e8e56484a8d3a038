package ping

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/gossip"
)

// fakeView is a gossip view a test sets member by member.
type fakeView struct {
	mu sync.Mutex
	m  map[string]gossip.Member
}

func (v *fakeView) Members() map[string]gossip.Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]gossip.Member{}
	for k, m := range v.m {
		out[k] = m
	}
	return out
}

func (v *fakeView) set(name string, st gossip.State) {
	v.mu.Lock()
	v.m[name] = gossip.Member{Name: name, State: st, RTT: time.Millisecond}
	v.mu.Unlock()
}

// TestLinkHysteresis feeds observations of one peer (a = alive, s =
// suspect, d = dead, l = left) and checks which states get written.
func TestLinkHysteresis(t *testing.T) {
	for _, tc := range []struct {
		name, seen, written string
	}{
		{"settles up", "aaa", "U"},
		{"not yet settled", "aa", ""},
		{"down after up", "aaasss", "UD"},
		{"suspect then dead is one down", "aaassddd", "UD"},
		{"flapping every observation", "aaa" + strings.Repeat("sa", 100), "U"},
		{"flapping with short outages", "aaa" + strings.Repeat("ssaaa", 50), "U"},
		{"flapping from the start", strings.Repeat("as", 100), ""},
		{"down, then back up", "aaasssaaa", "UDU"},
		{"left is forgotten, comes back unchanged", "aaallaaa", "U"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			view := &fakeView{m: map[string]gossip.Member{}}
			st := newMemStore()
			s, err := New(Config{Name: "me", Links: TestLinkConfig()})
			if err != nil {
				t.Fatal(err)
			}
			r := newLinkRecorder(s, Cluster{View: view, Store: func() Store { return st }})
			now := time.Unix(1000, 0)
			states := map[rune]gossip.State{'a': gossip.StateAlive, 's': gossip.StateSuspect, 'd': gossip.StateDead, 'l': gossip.StateLeft}
			for _, c := range tc.seen {
				view.set("peer", states[c])
				r.observe(now)
				r.flush(context.Background())
				now = now.Add(time.Second)
			}
			var got strings.Builder
			for _, l := range st.log {
				if l.Reachable {
					got.WriteByte('U')
				} else {
					got.WriteByte('D')
				}
			}
			if got.String() != tc.written {
				t.Errorf("observed %q: wrote %q, want %q", tc.seen, got.String(), tc.written)
			}
		})
	}
}
