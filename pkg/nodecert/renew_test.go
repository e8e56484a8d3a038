package nodecert

import (
	"context"
	"errors"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
)

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func serialOf(s *Source) *big.Int {
	if l := s.Leaf(); l != nil {
		return l.SerialNumber
	}
	return nil
}

func startRenewer(t *testing.T, validity time.Duration, failFirst int32) (*Source, *Renewer, *atomic.Int32) {
	t.Helper()
	ca := newTestCA(t)
	key := auth.NewNodeKey()
	src, err := NewSource(t.TempDir(), "host-1", key, ca.pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	iss := ca.issuer(t, validity, nil)
	var calls atomic.Int32
	r := &Renewer{Source: src, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Obtain: func(context.Context) ([]byte, error) {
			if calls.Add(1) <= failFirst {
				return nil, errors.New("control plane unreachable")
			}
			b, _, err := iss.Issue("host-1", key.Public())
			return b, err
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return src, r, &calls
}

// A node without a certificate obtains one (retrying while the control
// plane fails), and renews it at two thirds of its lifetime, before it
// expires.
func TestRenewerObtainsAndRenewsBeforeExpiry(t *testing.T) {
	src, _, calls := startRenewer(t, 3*time.Second, 2)
	waitFor(t, "a first certificate", 5*time.Second, func() bool { return src.Leaf() != nil })
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d attempts for the first certificate, want 3 (two failures, then success)", n)
	}
	first := src.Leaf()
	if at := RenewAt(first.NotBefore, first.NotAfter); !at.After(first.NotBefore) || !at.Before(first.NotAfter) {
		t.Fatalf("renewal at %s is outside the certificate's life %s–%s", at, first.NotBefore, first.NotAfter)
	}
	waitFor(t, "a renewed certificate", 5*time.Second, func() bool { return serialOf(src).Cmp(first.SerialNumber) != 0 })
	if now := time.Now(); !now.Before(first.NotAfter) {
		t.Fatalf("renewed at %s, after the first certificate expired at %s", now, first.NotAfter)
	}
}

// Poke (a join again) obtains a new certificate at once, long before the
// renewal point.
func TestRenewerObtainsAgainWhenPoked(t *testing.T) {
	src, r, _ := startRenewer(t, time.Hour, 0)
	waitFor(t, "a first certificate", 5*time.Second, func() bool { return src.Leaf() != nil })
	first := serialOf(src)
	r.Poke()
	waitFor(t, "a new certificate after the poke", 5*time.Second, func() bool { return serialOf(src).Cmp(first) != 0 })
}
