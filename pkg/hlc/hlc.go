// Package hlc is the hybrid logical clock every hivemind node stamps its
// changes with, and the 128-bit event ids built from it.
//
// A Timestamp packs wall-clock milliseconds (upper 48 bits) and a logical
// counter (lower 16 bits) into a uint64, so timestamps compare as integers,
// stay close to real time, and still order causally related events when
// clocks disagree.
package hlc

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Timestamp is a hybrid logical clock reading.
type Timestamp uint64

const logicalBits = 16

// maxMillis is the largest physical part 48 bits hold (about year 10889).
const maxMillis = 1<<(64-logicalBits) - 1

// FromParts builds a timestamp from milliseconds since the Unix epoch and a
// logical counter. Milliseconds outside 0..2^48-1 are clamped: a wall clock
// before 1970 must not wrap around to the far future.
func FromParts(ms int64, logical uint16) Timestamp {
	ms = min(max(ms, 0), maxMillis)
	return Timestamp(uint64(ms)<<logicalBits | uint64(logical))
}

// FromTime is the timestamp of t with a zero logical counter.
func FromTime(t time.Time) Timestamp { return FromParts(t.UnixMilli(), 0) }

// Millis is the physical part in milliseconds since the Unix epoch.
func (t Timestamp) Millis() int64 { return int64(uint64(t) >> logicalBits) }

// Physical is the physical part as a time.
func (t Timestamp) Physical() time.Time { return time.UnixMilli(t.Millis()).UTC() }

// Logical is the logical counter.
func (t Timestamp) Logical() uint16 { return uint16(t) }

// String renders the timestamp as RFC 3339 time plus the counter.
func (t Timestamp) String() string {
	return fmt.Sprintf("%s+%d", t.Physical().Format("2006-01-02T15:04:05.000Z07:00"), t.Logical())
}

// ErrDrift is returned by Update when a remote timestamp is too far ahead.
var ErrDrift = errors.New("hlc: remote clock too far ahead")

// DefaultMaxDrift bounds how far ahead of the local wall clock a remote
// timestamp may be before Update refuses it. Following a remote clock drags
// this node's clock (and every id it stamps) ahead with it, and nothing ever
// brings it back; a node whose clock is an hour off should be noticed, not
// followed. A minute is far beyond NTP error, yet small enough that an id
// stamped from a bad clock is still close to real time.
const DefaultMaxDrift = time.Minute

// Clock is a hybrid logical clock. It is safe for concurrent use.
type Clock struct {
	now      func() time.Time
	maxDrift time.Duration

	mu   sync.Mutex
	last Timestamp
}

// New returns a clock reading wall time from now (nil means time.Now),
// refusing remote timestamps more than DefaultMaxDrift ahead.
func New(now func() time.Time) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{now: now, maxDrift: DefaultMaxDrift}
}

// SetMaxDrift changes the bound Update enforces; d <= 0 removes it, for
// callers that must merge whatever they receive.
func (c *Clock) SetMaxDrift(d time.Duration) {
	c.mu.Lock()
	c.maxDrift = d
	c.mu.Unlock()
}

// Now returns a timestamp greater than every one this clock returned or
// received before. When more than 65,536 readings fall in one millisecond
// the counter carries into the physical part, so the clock briefly runs up
// to a few milliseconds ahead of the wall rather than repeating itself.
func (c *Clock) Now() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	wall := FromTime(c.now())
	if wall > c.last {
		c.last = wall
	} else {
		c.last++
	}
	return c.last
}

// Update merges a timestamp received from another node (the HLC receive
// rule), so that what this node does next orders after it, and returns the
// new reading. A remote timestamp more than the max drift ahead of the local
// wall clock is refused with an error wrapping ErrDrift and leaves the clock
// unchanged.
func (c *Clock) Update(remote Timestamp) (Timestamp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wallTime := c.now()
	if c.maxDrift > 0 && remote.Physical().Sub(wallTime) > c.maxDrift {
		return c.last, fmt.Errorf("%w: %s is more than %s ahead of %s", ErrDrift, remote, c.maxDrift, wallTime.UTC().Format(time.RFC3339))
	}
	wall := FromTime(wallTime)
	next := max(wall, c.last, remote)
	if next == c.last || next == remote {
		next++
	}
	c.last = next
	return c.last, nil
}
