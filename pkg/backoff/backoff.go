// Package backoff computes the pauses between retries: a ceiling that
// doubles per attempt from a base up to a maximum, and a random pause under
// it, so that callers who failed together do not retry together.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Ceiling is base doubled attempt times (attempt 0 gives base), at most
// limit. A base that is not positive gives 0.
func Ceiling(base, limit time.Duration, attempt int) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base
	for i := 0; i < attempt && d < limit; i++ {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}

// Equal is a pause in [ceiling/2, ceiling]: at least half the ceiling, so
// that retries still slow down, the other half random.
func Equal(base, limit time.Duration, attempt int) time.Duration {
	d := Ceiling(base, limit, attempt)
	return d/2 + rand.N(d/2+1)
}

// Full is a pause in [0, ceiling], the widest spread.
func Full(base, limit time.Duration, attempt int) time.Duration {
	return rand.N(Ceiling(base, limit, attempt) + 1)
}

// Sleep pauses for d, or until ctx ends, whichever is first; it returns
// ctx's error when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
