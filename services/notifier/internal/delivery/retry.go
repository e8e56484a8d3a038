package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hivemind/hivemind/pkg/backoff"
)

// State is how a delivery ended.
type State string

// The final states of a delivery.
const (
	// StateDelivered: the receiver accepted it.
	StateDelivered State = "delivered"
	// StateDeadLettered: the receiver refused it for good, or the attempts
	// or the maximum age ran out; the delivery is kept for inspection.
	StateDeadLettered State = "dead_lettered"
	// StateDisabled: the receiver said it is gone (HTTP 410); the caller
	// disables the subscription.
	StateDisabled State = "disabled"
	// StateExpired: the event passed its TTL expiry before it was sent.
	StateExpired State = "expired"
)

// Verdict is what one attempt means for the delivery.
type Verdict int

// Verdicts of an attempt.
const (
	// Retry: a transient failure; try again after a backoff.
	Retry Verdict = iota
	// Success: the receiver accepted the delivery.
	Success
	// Permanent: the receiver refused it and will refuse it again.
	Permanent
	// Disable: the receiver is gone; stop delivering to the subscription.
	Disable
	// Expire: there is nothing left to send because it expired.
	Expire
)

// Outcome is what a sender reports for one attempt.
type Outcome struct {
	Verdict Verdict
	// StatusCode is the HTTP status or SMTP reply code; 0 when none came.
	StatusCode int
	// Err says why the attempt failed; nil on success.
	Err error
	// RetryAfter is the wait the receiver asked for (0: none).
	RetryAfter time.Duration
}

// Attempt is the record of one attempt, as a caller stores it.
type Attempt struct {
	Number     int // from 1
	Start      time.Time
	Latency    time.Duration
	StatusCode int
	Err        error // nil on success
	// Wait is the pause before the next attempt; 0 when there is none.
	Wait time.Duration
}

// Result is the structured outcome of a delivery.
type Result struct {
	DeliveryID string
	State      State
	// Reason says why a delivery that was not delivered ended as it did.
	Reason   string
	Attempts []Attempt
	// Expired lists the ids of events dropped from a batch because they
	// expired before it was sent.
	Expired []string
}

// Policy bounds the attempts of one delivery. The zero value of a field
// takes its default from DefaultPolicy.
type Policy struct {
	// AttemptTimeout bounds one attempt (connect, send, answer).
	AttemptTimeout time.Duration
	// InitialBackoff is the ceiling of the first pause; it doubles with
	// each attempt up to MaxBackoff, and the pause is drawn uniformly
	// below the ceiling ("full jitter"), so replicas retrying the same
	// receiver spread out.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// MaxAge bounds the whole delivery, counted from Job.Since: no attempt
	// starts after it, and a wait that would pass it dead-letters now.
	MaxAge time.Duration
	// MaxAttempts, when positive, bounds the number of attempts too.
	MaxAttempts int
}

// DefaultPolicy is what a production notifier uses.
func DefaultPolicy() Policy {
	return Policy{
		AttemptTimeout: 10 * time.Second,
		InitialBackoff: time.Second,
		MaxBackoff:     5 * time.Minute,
		MaxAge:         24 * time.Hour,
	}
}

// TestPolicy is a preset for tests: the same shape in milliseconds.
func TestPolicy() Policy {
	return Policy{
		AttemptTimeout: 2 * time.Second,
		InitialBackoff: 5 * time.Millisecond,
		MaxBackoff:     50 * time.Millisecond,
		MaxAge:         10 * time.Second,
		MaxAttempts:    5,
	}
}

func (p Policy) withDefaults() Policy {
	d := DefaultPolicy()
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = d.AttemptTimeout
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = d.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	if p.MaxAge <= 0 {
		p.MaxAge = d.MaxAge
	}
	return p
}

// Job is one delivery for Policy.Run.
type Job struct {
	// ID is the delivery id (see ID).
	ID string
	// Since is when the delivery began, so a replica that takes it over
	// keeps its age; zero means now.
	Since time.Time
	// Expired, if set, is asked before every attempt; true ends the
	// delivery as expired without sending.
	Expired func(now time.Time) bool
	// Attempt makes one attempt; ctx carries the attempt's timeout.
	Attempt func(ctx context.Context) Outcome
	// Observe, if set, is called after every attempt, before any wait, so
	// the caller can record attempts as they happen.
	Observe func(Attempt)
}

// ErrInterrupted is returned, wrapping the context's error, when ctx ends
// before the delivery reached a final state. The caller must not record an
// outcome: the delivery is still owed.
var ErrInterrupted = errors.New("delivery interrupted")

// Run makes attempts until one succeeds or the delivery reaches another
// final state. The error is non-nil only when ctx ended first; the Result
// then holds the attempts so far and no State.
func (p Policy) Run(ctx context.Context, job Job) (Result, error) {
	p = p.withDefaults()
	res := Result{DeliveryID: job.ID}
	since := job.Since
	if since.IsZero() {
		since = time.Now()
	}
	deadline := since.Add(p.MaxAge)
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		now := time.Now()
		if job.Expired != nil && job.Expired(now) {
			return res.end(StateExpired, "event passed its TTL expiry"), nil
		}
		if !now.Before(deadline) {
			return res.end(StateDeadLettered, fmt.Sprintf("maximum age %v reached", p.MaxAge)), nil
		}

		actx, cancel := context.WithTimeout(ctx, p.AttemptTimeout)
		out := job.Attempt(actx)
		cancel()
		a := Attempt{Number: n, Start: now, Latency: time.Since(now), StatusCode: out.StatusCode, Err: out.Err}
		if out.Verdict == Retry && ctx.Err() != nil {
			// The attempt failed because we are stopping, not because of
			// the receiver: it says nothing about the delivery.
			res.Attempts = append(res.Attempts, a)
			p.observe(job, a)
			return res, fmt.Errorf("%w: %w", ErrInterrupted, ctx.Err())
		}

		var final State
		var reason string
		switch out.Verdict {
		case Success:
			final = StateDelivered
		case Permanent:
			final, reason = StateDeadLettered, "permanent failure: "+errString(out.Err)
		case Disable:
			final, reason = StateDisabled, "receiver is gone: "+errString(out.Err)
		case Expire:
			final, reason = StateExpired, "event passed its TTL expiry"
		default:
			wait := out.RetryAfter
			if wait <= 0 {
				wait = p.backoff(n)
			}
			switch {
			case p.MaxAttempts > 0 && n >= p.MaxAttempts:
				final, reason = StateDeadLettered, fmt.Sprintf("%d attempts failed, last: %s", n, errString(out.Err))
			case time.Now().Add(wait).After(deadline):
				final, reason = StateDeadLettered, fmt.Sprintf("maximum age %v would pass before the next attempt, last: %s", p.MaxAge, errString(out.Err))
			default:
				a.Wait = wait
			}
		}
		res.Attempts = append(res.Attempts, a)
		p.observe(job, a)
		if final != "" {
			return res.end(final, reason), nil
		}

		t := time.NewTimer(a.Wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("%w: %w", ErrInterrupted, ctx.Err())
		case <-t.C:
		}
	}
}

func (p Policy) observe(job Job, a Attempt) {
	if job.Observe != nil {
		job.Observe(a)
	}
}

// backoff is the pause after attempt n: uniform in [0, ceiling], the
// ceiling doubling from InitialBackoff up to MaxBackoff.
func (p Policy) backoff(n int) time.Duration {
	return backoff.Full(p.InitialBackoff, p.MaxBackoff, n-1)
}

func (r Result) end(s State, reason string) Result {
	r.State = s
	r.Reason = reason
	return r
}

func errString(err error) string {
	if err == nil {
		return "no error given"
	}
	return err.Error()
}
