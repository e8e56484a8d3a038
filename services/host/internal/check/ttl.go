package check

import (
	"context"
	"fmt"
	"time"

	"github.com/hivemind/hivemind/services/host/internal/clock"
)

// watchTTL turns a TTL check critical when it is not renewed in time. The
// deadline is set by UpdateTTL from the clock at the update, so it does not
// depend on when this goroutine gets to arm its timer.
func (r *Runner) watchTTL(ctx context.Context, serviceID string, run *checkRun) {
	defer r.wg.Done()
	var timer clock.Timer
	var fired <-chan time.Time
	arm := func() { // r.mu is held
		if timer != nil {
			timer.Stop()
		}
		timer = r.clock.NewTimer(run.deadline.Sub(r.clock.Now()))
		fired = timer.C()
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-run.renew:
			r.mu.Lock()
			arm()
			r.mu.Unlock()
		case <-fired:
			timer, fired = nil, nil
			r.mu.Lock()
			switch {
			case !run.expires:
			case r.clock.Now().Before(run.deadline):
				arm() // renewed since this timer was armed
			default:
				run.expires = false
				out := "TTL expired"
				if last := run.state.Output; last != "" {
					out = "TTL expired (last output before timeout follows): " + last
				}
				r.setLocked(serviceID, run, Result{Critical, truncate(out, r.max)})
			}
			r.mu.Unlock()
		}
	}
}

// UpdateTTL sets the status of a TTL check and renews its TTL.
func (r *Runner) UpdateTTL(serviceID, checkID string, st Status, output string) error {
	if !st.Valid() {
		return fmt.Errorf("check: invalid status %d", st)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	s := r.services[serviceID]
	if s == nil {
		return fmt.Errorf("%w %q", ErrUnknownService, serviceID)
	}
	for _, c := range s.checks {
		if c.def.ID != checkID {
			continue
		}
		if c.def.Kind != KindTTL {
			return fmt.Errorf("%w: %q of service %q", ErrNotTTL, checkID, serviceID)
		}
		c.deadline, c.expires = r.clock.Now().Add(c.def.TTL), true
		r.setLocked(serviceID, c, Result{st, truncate(output, r.max)})
		select {
		case c.renew <- struct{}{}:
		default: // a renew is already pending; it reads the new deadline
		}
		return nil
	}
	return fmt.Errorf("%w %q of service %q", ErrUnknownCheck, checkID, serviceID)
}
