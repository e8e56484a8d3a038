package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hivemind/hivemind/pkg/backoff"
)

// SupervisorConfig configures a Supervisor.
type SupervisorConfig struct {
	// Engine is the configuration of every engine the supervisor starts;
	// its ControlPlane is replaced by the current one.
	Engine Config
	// ControlPlane returns the client to use now, or nil while there is
	// none (not joined yet). A node's client changes when it joins again
	// (cluster.Node.ControlPlane), and the old one is closed.
	ControlPlane func() ControlPlane
	// OnState is told whenever an engine becomes able to deliver (loaded)
	// or stops being able to, with the reason.
	OnState func(delivering bool, reason string)
	// Poll is how often the supervisor looks for a new client. Default 1s.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait before an engine that
	// stopped with an error is started again. Defaults 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
}

// Supervisor keeps one engine running on the node's current control-plane
// client: it starts a fresh engine (which resumes from the durable cursor)
// when the client changes or after the engine stopped with an error,
// waiting with exponential backoff between failed runs. Without it the
// notifier would go on answering its API while delivering nothing.
type Supervisor struct {
	cfg SupervisorConfig

	mu  sync.Mutex
	eng *Engine
}

// NewSupervisor returns a supervisor; Run starts it.
func NewSupervisor(cfg SupervisorConfig) *Supervisor {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.OnState == nil {
		cfg.OnState = func(bool, string) {}
	}
	return &Supervisor{cfg: cfg}
}

// Engine is the engine running now, or nil.
func (s *Supervisor) Engine() *Engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eng
}

// errClientChanged ends an engine whose client was replaced.
var errClientChanged = errors.New("the control-plane client changed")

// Run supervises engines until ctx ends.
func (s *Supervisor) Run(ctx context.Context) error {
	log := s.cfg.Engine.Logger
	failures := 0 // in a row, each waiting longer
	for {
		cp, err := s.waitClient(ctx)
		if err != nil {
			return nil
		}
		started := time.Now()
		err = s.runOnce(ctx, cp)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errClientChanged) {
			if log != nil {
				log.Info("the control-plane client changed; restarting the notifier engine on the new one")
			}
			s.cfg.OnState(false, "restarting on a new control-plane client")
			failures = 0
			continue
		}
		if err == nil {
			err = errors.New("the engine stopped without an error")
		}
		// An engine that ran for a while before failing starts again
		// quickly; one that keeps failing waits longer each time.
		if time.Since(started) > s.cfg.MaxBackoff {
			failures = 0
		}
		wait := backoff.Equal(s.cfg.MinBackoff, s.cfg.MaxBackoff, failures)
		if log != nil {
			log.Error("notifier engine stopped; starting it again", "err", err, "in", wait)
		}
		s.cfg.OnState(false, "engine stopped: "+err.Error())
		if backoff.Sleep(ctx, wait) != nil {
			return nil
		}
		failures++
	}
}

// waitClient waits until there is a client.
func (s *Supervisor) waitClient(ctx context.Context) (ControlPlane, error) {
	for {
		if cp := s.cfg.ControlPlane(); cp != nil {
			return cp, nil
		}
		if err := backoff.Sleep(ctx, s.cfg.Poll); err != nil {
			return nil, err
		}
	}
}

// runOnce runs one engine on cp until it stops, ctx ends or the client
// changes.
func (s *Supervisor) runOnce(ctx context.Context, cp ControlPlane) error {
	cfg := s.cfg.Engine
	cfg.ControlPlane = cp
	eng, err := New(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.eng = eng
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.eng = nil
		s.mu.Unlock()
	}()

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	tick := time.NewTicker(s.cfg.Poll)
	defer tick.Stop()
	loaded := eng.Loaded()
	for {
		select {
		case err := <-done:
			if cause := context.Cause(runCtx); errors.Is(cause, errClientChanged) {
				return cause
			}
			return err
		case <-loaded:
			loaded = nil
			s.cfg.OnState(true, "")
		case <-tick.C:
			if now := s.cfg.ControlPlane(); now != cp {
				cancel(errClientChanged)
			}
		}
	}
}
