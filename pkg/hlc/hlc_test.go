package hlc

import (
	"encoding/binary"
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

func TestTimestampParts(t *testing.T) {
	tests := []struct {
		name    string
		ts      Timestamp
		millis  int64
		logical uint16
		text    string
	}{
		{"zero", 0, 0, 0, "1970-01-01T00:00:00.000Z+0"},
		{"parts", ts(1_700_000_000_123, 42), 1_700_000_000_123, 42, "2023-11-14T22:13:20.123Z+42"},
		{"before 1970 clamps to zero", FromTime(time.UnixMilli(-5)), 0, 0, "1970-01-01T00:00:00.000Z+0"},
		{"logical max", ts(1, 0xffff), 1, 0xffff, "1970-01-01T00:00:00.001Z+65535"},
		{"counter carries into millis", ts(1, 0xffff) + 1, 2, 0, "1970-01-01T00:00:00.002Z+0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ts.Millis() != tt.millis || tt.ts.Logical() != tt.logical || tt.ts.String() != tt.text {
				t.Fatalf("got %d/%d %q", tt.ts.Millis(), tt.ts.Logical(), tt.ts.String())
			}
			if !tt.ts.Physical().Equal(time.UnixMilli(tt.millis)) {
				t.Fatalf("physical %v", tt.ts.Physical())
			}
		})
	}
}

func TestClockMaxDrift(t *testing.T) {
	w := &fakeWall{t: at(1_000_000)}
	c := New(w.now)
	c.SetMaxDrift(time.Second)
	before := c.Now()
	if got, err := c.Update(ts(1_000_000+1_001, 0)); !errors.Is(err, ErrDrift) || got != before {
		t.Fatalf("1.001s ahead with a 1s bound: %v %v, want ErrDrift and an unchanged clock", got, err)
	}
	if _, err := c.Update(ts(1_000_000+1_000, 0)); err != nil {
		t.Fatalf("exactly at the bound: %v", err)
	}
	c.SetMaxDrift(0)
	if got, err := c.Update(ts(1_000_000+3_600_000, 0)); err != nil || got != ts(1_000_000+3_600_000, 1) {
		t.Fatalf("unbounded: %v %v", got, err)
	}
}

// TestClockConcurrentMonotonic mixes Now and Update from many goroutines:
// every goroutine must see its own readings strictly increase, and no two
// readings anywhere may be equal.
func TestClockConcurrentMonotonic(t *testing.T) {
	w := &fakeWall{t: at(5_000)}
	c := New(w.now)
	const workers, each = 8, 1000
	out := make(chan []Timestamp, workers)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var mine []Timestamp
			for j := 0; j < each; j++ {
				var got Timestamp
				switch j % 3 {
				case 0:
					got = c.Now()
				case 1:
					got, _ = c.Update(ts(5_000+int64(j%7), uint16(i)))
				default:
					w.set(at(5_000 + int64(j%5))) // the wall clock jitters, even backwards
					got = c.Now()
				}
				if n := len(mine); n > 0 && got <= mine[n-1] {
					t.Errorf("worker %d: %v after %v", i, got, mine[n-1])
					return
				}
				mine = append(mine, got)
			}
			out <- mine
		}(i)
	}
	wg.Wait()
	close(out)
	seen := map[Timestamp]bool{}
	for mine := range out {
		for _, ts := range mine {
			if seen[ts] {
				t.Fatalf("duplicate timestamp %v", ts)
			}
			seen[ts] = true
		}
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

// FuzzParseID checks both directions: any id encodes to a string that
// parses back to it, and any string that parses re-encodes canonically.
func FuzzParseID(f *testing.F) {
	f.Add("01ARZ3NDEKTSV4RRFFQ69G5FAV", uint64(0), uint64(0))
	f.Add(NewID(ts(1<<40, 7), "n", 3).String(), uint64(1)<<63, uint64(42))
	f.Add("zzzzzzzzzzzzzzzzzzzzzzzzzz", ^uint64(0), ^uint64(0))
	f.Fuzz(func(t *testing.T, s string, hi, lo uint64) {
		var gen ID
		binary.BigEndian.PutUint64(gen[:8], hi)
		binary.BigEndian.PutUint64(gen[8:], lo)
		if back, err := ParseID(gen.String()); err != nil || back != gen {
			t.Fatalf("id %x: %q parses to %x, %v", gen[:], gen.String(), back[:], err)
		}
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
