package check

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hivemind/hivemind/services/host/internal/clock"
)

// DefaultTimeout bounds one run of a check that sets no timeout (capped at
// its interval).
const DefaultTimeout = 10 * time.Second

// Service is what the runner knows of a service: its id and its checks.
type Service struct {
	ID     string
	Checks []Definition
}

// CheckState is the last known result of one check.
type CheckState struct {
	ID     string
	Name   string
	Kind   Kind
	Status Status
	Output string
}

// ServiceHealth is the health of one service: the worst status of its
// checks (passing when it has none) and every check's state, in the order
// they were defined.
type ServiceHealth struct {
	ServiceID string
	Status    Status
	Checks    []CheckState
}

// Equal reports whether h and o say the same.
func (h ServiceHealth) Equal(o ServiceHealth) bool {
	return h.ServiceID == o.ServiceID && h.Status == o.Status && slices.Equal(h.Checks, o.Checks)
}

// Observer is told the health of a service when it changes: when the
// service appears, and when its status or any check's status or output
// differs from what the observer was last told. Calls come from one
// goroutine, in order; a slow observer is told the latest health, not every
// state in between.
type Observer func(ServiceHealth)

// Options configure a Runner. The zero value runs real checks on the wall
// clock and tells nobody.
type Options struct {
	Clock clock.Clock // nil: the wall clock
	// Exec runs exec checks (nil: ExecCommand).
	Exec Execer
	// MaxOutput bounds each check's output (<= 0: DefaultMaxOutput).
	MaxOutput int
	// FirstRun is the delay before a check's first run, given its interval
	// (nil: uniformly random below the interval, so checks added together
	// do not all run together).
	FirstRun func(interval time.Duration) time.Duration
	Observer Observer
	// OutputInterval throttles output-only changes, as Consul's
	// check_update_interval does: a check whose output changes while its
	// status stays the same makes its service be told at most once per
	// OutputInterval; the latest output goes out then, or with the next
	// change told sooner. A status change is told at once. 0: every change
	// at once.
	OutputInterval time.Duration
}

// Errors of UpdateTTL and SetServices.
var (
	ErrUnknownService = errors.New("check: unknown service")
	ErrUnknownCheck   = errors.New("check: unknown check")
	ErrNotTTL         = errors.New("check: not a TTL check")
	ErrStopped        = errors.New("check: runner stopped")
)

// Runner runs the checks of a set of services. Its methods are safe for
// concurrent use.
type Runner struct {
	clock    clock.Clock
	exec     Execer
	max      int
	firstRun func(time.Duration) time.Duration
	observer Observer
	outputIv time.Duration

	mu       sync.Mutex
	services map[string]*serviceRun
	dirty    map[string]bool
	nextGen  uint64
	stopped  bool

	wake     chan struct{}
	stopping chan struct{}
	wg       sync.WaitGroup
}

type serviceRun struct {
	id     string
	gen    uint64 // tells a re-added service from the one it replaced
	checks []*checkRun
	// toldAt is when the dispatcher last took this service's health;
	// pending says a throttled output change has not gone out yet, and
	// flushing that a goroutine will mark the service dirty for it. All
	// guarded by Runner.mu.
	toldAt   time.Time
	pending  bool
	flushing bool
}

type checkRun struct {
	def   Definition
	state CheckState // guarded by Runner.mu
	// TTL: when the last update runs out, and whether it still can;
	// guarded by Runner.mu.
	deadline time.Time
	expires  bool
	renew    chan struct{}
	cancel   context.CancelFunc
	gone     bool // removed; late results are dropped; guarded by Runner.mu
}

// NewRunner returns a runner with no services.
func NewRunner(o Options) *Runner {
	r := &Runner{
		clock:    o.Clock,
		exec:     o.Exec,
		max:      o.MaxOutput,
		firstRun: o.FirstRun,
		observer: o.Observer,
		outputIv: o.OutputInterval,
		services: map[string]*serviceRun{},
		dirty:    map[string]bool{},
		wake:     make(chan struct{}, 1),
		stopping: make(chan struct{}),
	}
	if r.clock == nil {
		r.clock = clock.Real{}
	}
	if r.exec == nil {
		r.exec = ExecCommand
	}
	if r.max <= 0 {
		r.max = DefaultMaxOutput
	}
	if r.firstRun == nil {
		r.firstRun = func(iv time.Duration) time.Duration {
			if iv <= 0 {
				return 0
			}
			return rand.N(iv)
		}
	}
	r.wg.Add(1)
	go r.dispatch()
	return r
}

// SetServices makes svcs the services the runner checks. A check whose
// definition is unchanged keeps running with its state; a new or changed
// check starts critical, like a new service. Nothing is applied when an
// error is returned.
func (r *Runner) SetServices(svcs []Service) error {
	svcs = slices.Clone(svcs) // normalize fills defaults in; not in the caller's slices
	for i := range svcs {
		svcs[i].Checks = slices.Clone(svcs[i].Checks)
	}
	checkers := make(map[[2]string]Checker)
	seen := map[string]bool{}
	for i := range svcs {
		s := &svcs[i]
		if s.ID == "" {
			return fmt.Errorf("check: services[%d]: empty id", i)
		}
		if seen[s.ID] {
			return fmt.Errorf("check: services[%d]: duplicate id %q", i, s.ID)
		}
		seen[s.ID] = true
		ids := map[string]bool{}
		for j := range s.Checks {
			d := &s.Checks[j]
			if err := normalize(d); err != nil {
				return fmt.Errorf("check: service %q checks[%d]: %w", s.ID, j, err)
			}
			if ids[d.ID] {
				return fmt.Errorf("check: service %q checks[%d]: duplicate id %q", s.ID, j, d.ID)
			}
			ids[d.ID] = true
			if d.Kind == KindTTL {
				continue
			}
			c, err := NewChecker(*d, r.exec, r.max)
			if err != nil {
				return fmt.Errorf("check: service %q check %q: %w", s.ID, d.ID, err)
			}
			checkers[[2]string{s.ID, d.ID}] = c
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	for id, old := range r.services {
		if !seen[id] {
			for _, c := range old.checks {
				r.stopCheck(c)
			}
			delete(r.services, id)
			r.markDirty(id)
		}
	}
	for _, s := range svcs {
		old := r.services[s.ID]
		if old == nil {
			r.nextGen++
			old = &serviceRun{id: s.ID, gen: r.nextGen}
			r.services[s.ID] = old
		}
		kept := map[string]*checkRun{}
		for _, c := range old.checks {
			kept[c.def.ID] = c
		}
		var checks []*checkRun
		for _, d := range s.Checks {
			if c := kept[d.ID]; c != nil && reflect.DeepEqual(c.def, d) {
				delete(kept, d.ID)
				checks = append(checks, c)
				continue
			}
			checks = append(checks, r.startCheck(s.ID, d, checkers[[2]string{s.ID, d.ID}]))
		}
		for _, c := range kept {
			r.stopCheck(c)
		}
		old.checks = checks
		r.markDirty(s.ID)
	}
	return nil
}

// normalize fills the defaults of d and refuses what cannot run.
func normalize(d *Definition) error {
	if d.ID == "" {
		return errors.New("empty id")
	}
	if d.Name == "" {
		d.Name = d.ID
	}
	if d.Kind == KindTTL {
		if d.TTL <= 0 {
			return errors.New("ttl must be positive")
		}
		return nil
	}
	if d.Interval <= 0 {
		return errors.New("interval must be positive")
	}
	if d.Timeout <= 0 {
		d.Timeout = min(DefaultTimeout, d.Interval)
	}
	return nil
}

// startCheck starts the goroutine of a check; r.mu is held.
func (r *Runner) startCheck(serviceID string, d Definition, c Checker) *checkRun {
	ctx, cancel := context.WithCancel(context.Background())
	run := &checkRun{def: d, cancel: cancel, state: CheckState{
		ID: d.ID, Name: d.Name, Kind: d.Kind, Status: Critical,
	}}
	r.wg.Add(1)
	if d.Kind == KindTTL {
		run.state.Output = "TTL check not yet updated"
		run.renew = make(chan struct{}, 1)
		go r.watchTTL(ctx, serviceID, run)
	} else {
		run.state.Output = "not yet checked"
		go r.probe(ctx, serviceID, run, c)
	}
	return run
}

// stopCheck ends a check's goroutine without waiting; r.mu is held.
func (r *Runner) stopCheck(c *checkRun) {
	c.gone = true
	c.cancel()
}

// probe runs a checker on its interval until ctx ends.
func (r *Runner) probe(ctx context.Context, serviceID string, run *checkRun, c Checker) {
	defer r.wg.Done()
	delay := r.firstRun(run.def.Interval)
	for {
		t := r.clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		// The timeout is real time even on a fake clock: it bounds sockets
		// and processes, which do not read the fake clock.
		cctx, cancel := context.WithTimeout(ctx, run.def.Timeout)
		res := c.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-run: the result is of a check nobody runs
		}
		if !res.Status.Valid() {
			res.Status = Critical
		}
		res.Output = truncate(res.Output, r.max)
		r.mu.Lock()
		r.setLocked(serviceID, run, res)
		r.mu.Unlock()
		delay = run.def.Interval
	}
}

// setLocked records a result; r.mu is held.
func (r *Runner) setLocked(serviceID string, c *checkRun, res Result) {
	if c.gone || (c.state.Status == res.Status && c.state.Output == res.Output) {
		return
	}
	statusChanged := c.state.Status != res.Status
	c.state.Status, c.state.Output = res.Status, res.Output
	s := r.services[serviceID]
	if statusChanged || r.outputIv <= 0 || s == nil {
		r.markDirty(serviceID)
		return
	}
	wait := s.toldAt.Add(r.outputIv).Sub(r.clock.Now())
	if wait <= 0 {
		r.markDirty(serviceID)
		return
	}
	s.pending = true
	if !s.flushing {
		s.flushing = true
		r.wg.Add(1)
		go r.flushOutput(s, wait)
	}
}

// flushOutput marks s dirty once its interval has passed since it was last
// told, so a throttled output change goes out even when nothing else about
// the service changes.
func (r *Runner) flushOutput(s *serviceRun, wait time.Duration) {
	defer r.wg.Done()
	for {
		t := r.clock.NewTimer(wait)
		select {
		case <-r.stopping:
			t.Stop()
			return
		case <-t.C():
		}
		r.mu.Lock()
		if !s.pending || r.services[s.id] != s {
			s.flushing = false
			r.mu.Unlock()
			return
		}
		// Told since (a status change carried the output): wait again.
		if wait = s.toldAt.Add(r.outputIv).Sub(r.clock.Now()); wait <= 0 {
			s.flushing = false
			r.markDirty(s.id)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}

func (r *Runner) markDirty(serviceID string) {
	r.dirty[serviceID] = true
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (s *serviceRun) health() ServiceHealth {
	h := ServiceHealth{ServiceID: s.id, Status: Passing, Checks: make([]CheckState, len(s.checks))}
	for i, c := range s.checks {
		h.Checks[i] = c.state
		h.Status = Worst(h.Status, c.state.Status)
	}
	return h
}

// Health is the current health of a service.
func (r *Runner) Health(serviceID string) (ServiceHealth, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.services[serviceID]
	if s == nil {
		return ServiceHealth{}, false
	}
	return s.health(), true
}

// All is the current health of every service, by service id.
func (r *Runner) All() []ServiceHealth {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ServiceHealth, 0, len(r.services))
	for _, s := range r.services {
		out = append(out, s.health())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ServiceID < out[j].ServiceID })
	return out
}

// dispatch tells the observer about changed services, one at a time.
func (r *Runner) dispatch() {
	defer r.wg.Done()
	type told struct {
		gen uint64
		h   ServiceHealth
	}
	last := map[string]told{}
	for {
		select {
		case <-r.stopping:
			return
		case <-r.wake:
		}
		r.mu.Lock()
		var changed []told
		for id := range r.dirty {
			delete(r.dirty, id)
			s := r.services[id]
			if s == nil {
				delete(last, id)
				continue
			}
			s.toldAt, s.pending = r.clock.Now(), false
			changed = append(changed, told{s.gen, s.health()})
		}
		r.mu.Unlock()
		sort.Slice(changed, func(i, j int) bool { return changed[i].h.ServiceID < changed[j].h.ServiceID })
		for _, c := range changed {
			if prev, ok := last[c.h.ServiceID]; ok && prev.gen == c.gen && prev.h.Equal(c.h) {
				continue
			}
			last[c.h.ServiceID] = c
			if r.observer != nil {
				select {
				case <-r.stopping:
					return
				default:
				}
				r.observer(c.h)
			}
		}
	}
}

// Stop ends every check and the observer calls, and waits for them. It must
// not be called from the Observer. Calling it again does nothing.
func (r *Runner) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	for _, s := range r.services {
		for _, c := range s.checks {
			r.stopCheck(c)
		}
	}
	close(r.stopping)
	r.mu.Unlock()
	r.wg.Wait()
}
