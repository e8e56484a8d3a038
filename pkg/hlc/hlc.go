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

// FromParts builds a timestamp from milliseconds since the Unix epoch and a
// logical counter.
func FromParts(ms int64, logical uint16) Timestamp {
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
// timestamp may be before Update refuses it. A node whose clock is an hour
// off should be noticed, not followed.
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

// SetMaxDrift changes the bound Update enforces.
func (c *Clock) SetMaxDrift(d time.Duration) {
	c.mu.Lock()
	c.maxDrift = d
	c.mu.Unlock()
}

// Now returns a timestamp greater than every one this clock returned or
// received before.
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

// Update merges a timestamp received from another node, so that what this
// node does next orders after it, and returns the new reading.
func (c *Clock) Update(remote Timestamp) (Timestamp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wallTime := c.now()
	if remote.Physical().Sub(wallTime) > c.maxDrift {
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
