package hlc

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeWall struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeWall) now() time.Time    { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeWall) set(t time.Time)   { f.mu.Lock(); f.t = t; f.mu.Unlock() }
func at(ms int64) time.Time           { return time.UnixMilli(ms) }
func ts(ms int64, l uint16) Timestamp { return FromParts(ms, l) }

func TestClockNowIsStrictlyIncreasing(t *testing.T) {
	w := &fakeWall{t: at(1000)}
	c := New(w.now)
	steps := []struct {
		wall int64
		want Timestamp
	}{
		{1000, ts(1000, 0)},
		{1000, ts(1000, 1)}, // same millisecond: the counter moves
		{999, ts(1000, 2)},  // wall clock stepped back: never goes back
		{1005, ts(1005, 0)}, // wall clock ahead again: counter resets
	}
	for i, s := range steps {
		w.set(at(s.wall))
		if got := c.Now(); got != s.want {
			t.Fatalf("step %d: got %v, want %v", i, got, s.want)
		}
	}
}

func TestClockUpdate(t *testing.T) {
	w := &fakeWall{t: at(1000)}
	c := New(w.now)
	tests := []struct {
		name   string
		remote Timestamp
		want   Timestamp
	}{
		{"remote behind: wall wins", ts(500, 9), ts(1000, 0)},
		{"remote ahead: follows it", ts(1200, 3), ts(1200, 4)},
		{"remote equal to last: counter moves", ts(1200, 4), ts(1200, 5)},
	}
	for _, tt := range tests {
		got, err := c.Update(tt.remote)
		if err != nil || got != tt.want {
			t.Fatalf("%s: got %v %v, want %v", tt.name, got, err, tt.want)
		}
	}
	if next := c.Now(); next <= ts(1200, 5) {
		t.Fatalf("Now after Update went back: %v", next)
	}
	_, err := c.Update(FromTime(at(1000).Add(2 * DefaultMaxDrift)))
	if !errors.Is(err, ErrDrift) {
		t.Fatalf("far-ahead remote: got %v, want ErrDrift", err)
	}
}

func TestClockConcurrentUnique(t *testing.T) {
	c := New(nil)
	const workers, each = 8, 2000
	out := make(chan Timestamp, workers*each)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				out <- c.Now()
			}
		}()
	}
	wg.Wait()
	close(out)
	seen := map[Timestamp]bool{}
	for ts := range out {
		if seen[ts] {
			t.Fatalf("duplicate timestamp %v", ts)
		}
		seen[ts] = true
	}
}

func TestIDOrderAndText(t *testing.T) {
	a := NewID(ts(1000, 0), "node-b", 0)
	b := NewID(ts(1000, 1), "node-a", 0)
	c := NewID(ts(1000, 1), "node-a", 1)
	if a.Compare(b) >= 0 || b.Compare(c) >= 0 {
		t.Fatal("ids do not order by timestamp, then node, then sequence")
	}
	if !(a.String() < b.String() && b.String() < c.String()) {
		t.Fatal("text form does not keep the order")
	}
	if a.Timestamp() != ts(1000, 0) || c.Seq() != 1 {
		t.Fatal("parts not recovered")
	}
	for _, id := range []ID{a, b, c, {}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		s := id.String()
		if len(s) != EncodedLen {
			t.Fatalf("%q has length %d", s, len(s))
		}
		back, err := ParseID(strings.ToLower(s))
		if err != nil || back != id {
			t.Fatalf("round trip of %q: %v %v", s, back, err)
		}
	}
}

func TestParseIDRejects(t *testing.T) {
	for _, s := range []string{"", "0123", strings.Repeat("0", 25), strings.Repeat("0", 27), "8" + strings.Repeat("0", 25), "0000000000000000000000000U", "000000000000000000000000-0"} {
		if _, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) accepted", s)
		}
	}
}

func FuzzParseID(f *testing.F) {
	f.Add("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	f.Add(NewID(ts(1<<40, 7), "n", 3).String())
	f.Add("zzzzzzzzzzzzzzzzzzzzzzzzzz")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to the canonical (upper-case) form of the input.
		if got := id.String(); got != strings.ToUpper(s) {
			t.Fatalf("ParseID(%q).String() = %q", s, got)
		}
		back, err := ParseID(id.String())
		if err != nil || back != id {
			t.Fatalf("canonical form does not parse back: %v", err)
		}
	})
}
