package nodecert

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hivemind/hivemind/pkg/backoff"
)

// Obtain asks for a new certificate (PEM) for this node: from the control
// plane, or on a member holding the CA key, from its own Issuer.
type Obtain func(ctx context.Context) ([]byte, error)

// Renewer keeps a Source's certificate fresh: it obtains one when the
// source has none, again at two thirds of its lifetime, and whenever Poke
// says the node joined again (its registry entry, and so what the
// certificate stands for, may have changed).
type Renewer struct {
	Source *Source
	Obtain Obtain
	Logger *slog.Logger
	// RetryBase and RetryMax bound the backoff after a failed attempt.
	// Defaults 1s and 1 minute.
	RetryBase, RetryMax time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	once sync.Once
	poke chan struct{}
}

// RenewAt is when a certificate valid from notBefore to notAfter is
// renewed: at two thirds of its lifetime, leaving a third for retries
// while the control plane is unreachable.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 2 / 3)
}

// Poke asks for a new certificate now (after a join).
func (r *Renewer) Poke() {
	r.init()
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

func (r *Renewer) init() {
	r.once.Do(func() { r.poke = make(chan struct{}, 1) })
}

// Run renews until ctx ends.
func (r *Renewer) Run(ctx context.Context) {
	r.init()
	now, log := r.Now, r.Logger
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	base, maxWait := r.RetryBase, r.RetryMax
	if base <= 0 {
		base = time.Second
	}
	if maxWait <= 0 {
		maxWait = time.Minute
	}
	failures := 0
	due := true // a poke or no certificate: obtain now
	for {
		if leaf := r.Source.Leaf(); leaf != nil && !due {
			// Woken early by a poke, it obtains at once too.
			if wait := RenewAt(leaf.NotBefore, leaf.NotAfter).Sub(now()); wait > 0 && !r.sleepOrPoke(ctx, wait) {
				return
			}
		}
		due = false
		pem, err := r.Obtain(ctx)
		if err == nil {
			err = r.Source.Install(pem)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d := backoff.Equal(base, maxWait, failures)
			failures++
			log.Warn("node certificate not obtained; retrying", "err", err, "retry_in", d)
			if !r.sleepOrPoke(ctx, d) {
				return
			}
			due = true
			continue
		}
		failures = 0
		leaf := r.Source.Leaf()
		log.Info("node certificate installed", "not_after", leaf.NotAfter.UTC(), "renew_at", RenewAt(leaf.NotBefore, leaf.NotAfter).UTC(), "serial", leaf.SerialNumber.Text(16))
	}
}

// sleepOrPoke waits d, or less when poked. It reports false when ctx
// ended.
func (r *Renewer) sleepOrPoke(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-r.poke:
	}
	return true
}
