package backoff

import (
	"math"
	"testing"
	"time"
)

func TestCeilingDoublesUpToTheLimit(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		base, limit time.Duration
		attempt     int
		want        time.Duration
	}{
		{50 * ms, time.Second, 0, 50 * ms},
		{50 * ms, time.Second, 1, 100 * ms},
		{50 * ms, time.Second, 4, 800 * ms},
		{50 * ms, time.Second, 5, time.Second},
		{50 * ms, time.Second, 1000, time.Second},
		{time.Second, math.MaxInt64, 200, math.MaxInt64}, // no overflow on the way
		{0, time.Second, 3, 0},
		{2 * time.Second, time.Second, 0, time.Second}, // base above the limit
	} {
		if got := Ceiling(tc.base, tc.limit, tc.attempt); got != tc.want {
			t.Errorf("Ceiling(%v, %v, %d) = %v, want %v", tc.base, tc.limit, tc.attempt, got, tc.want)
		}
	}
}

func TestPausesStayUnderTheCeiling(t *testing.T) {
	base, limit := 10*time.Millisecond, 200*time.Millisecond
	for attempt := 0; attempt < 8; attempt++ {
		c := Ceiling(base, limit, attempt)
		lowEqual, lowFull := c, c
		for range 2000 {
			e, f := Equal(base, limit, attempt), Full(base, limit, attempt)
			if e < c/2 || e > c {
				t.Fatalf("attempt %d: Equal gave %v, outside [%v, %v]", attempt, e, c/2, c)
			}
			if f < 0 || f > c {
				t.Fatalf("attempt %d: Full gave %v, outside [0, %v]", attempt, f, c)
			}
			lowEqual, lowFull = min(lowEqual, e), min(lowFull, f)
		}
		// Random, not fixed: 2,000 draws reach well below the top.
		if lowEqual > c*3/4 || lowFull > c/4 {
			t.Fatalf("attempt %d: lowest of 2,000 pauses %v (equal), %v (full) under a ceiling of %v", attempt, lowEqual, lowFull, c)
		}
	}
}
