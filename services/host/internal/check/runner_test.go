package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/hivemind/services/host/internal/clock"
)

const wait = 10 * time.Second

// fakeExec answers exec checks by program name, and counts runs.
type fakeExec struct {
	mu    sync.Mutex
	codes map[string]int
	outs  map[string]string
	runs  map[string]int
}

func newFakeExec() *fakeExec {
	return &fakeExec{codes: map[string]int{}, outs: map[string]string{}, runs: map[string]int{}}
}

func (f *fakeExec) set(prog string, code int, out string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.codes[prog], f.outs[prog] = code, out
}

func (f *fakeExec) exec(_ context.Context, argv []string, out io.Writer) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs[argv[0]]++
	io.WriteString(out, f.outs[argv[0]])
	return f.codes[argv[0]], nil
}

func (f *fakeExec) count(prog string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[prog]
}

type harness struct {
	t     *testing.T
	clock *clock.Fake
	exec  *fakeExec
	seen  chan ServiceHealth
	r     *Runner
}

func newHarness(t *testing.T) *harness { return newHarnessWith(t, Options{}) }

// newHarnessWith takes o's other fields beside the harness's own.
func newHarnessWith(t *testing.T, o Options) *harness {
	h := &harness{t: t, clock: clock.NewFake(time.Unix(1000, 0)), exec: newFakeExec(), seen: make(chan ServiceHealth, 100)}
	o.Clock = h.clock
	o.Exec = h.exec.exec
	o.FirstRun = func(time.Duration) time.Duration { return time.Second }
	o.Observer = func(s ServiceHealth) { h.seen <- s }
	h.r = NewRunner(o)
	t.Cleanup(h.r.Stop)
	return h
}

// quiet fails when a notification is waiting.
func (h *harness) quiet() {
	h.t.Helper()
	time.Sleep(20 * time.Millisecond) // give a wrong notification time to show
	select {
	case s := <-h.seen:
		h.t.Fatalf("unexpected notification %+v", s)
	default:
	}
}

// next is the next notification, which must come within the deadline.
func (h *harness) next() ServiceHealth {
	h.t.Helper()
	select {
	case s := <-h.seen:
		return s
	case <-time.After(wait):
		h.t.Fatal("no notification")
		return ServiceHealth{}
	}
}

func (h *harness) expect(id string, st Status) ServiceHealth {
	h.t.Helper()
	s := h.next()
	if s.ServiceID != id || s.Status != st {
		h.t.Fatalf("notified %s %v %+v, want %s %v", s.ServiceID, s.Status, s.Checks, id, st)
	}
	return s
}

// tick waits until n timers are armed, then moves the clock by d.
func (h *harness) tick(n int, d time.Duration) {
	h.t.Helper()
	if !h.clock.WaitPending(n, wait) {
		h.t.Fatalf("%d timers armed, want %d", h.clock.Pending(), n)
	}
	h.clock.Advance(d)
}

func execCheck(id, prog string) Definition {
	return Definition{ID: id, Kind: KindExec, Args: []string{prog}, Interval: 10 * time.Second}
}

func TestRunnerNotifiesOnlyOnChange(t *testing.T) {
	h := newHarness(t)
	h.exec.set("a", 0, "ok")
	if err := h.r.SetServices([]Service{{ID: "web", Checks: []Definition{execCheck("c", "a")}}}); err != nil {
		t.Fatal(err)
	}
	s := h.expect("web", Critical) // a new service starts critical
	if s.Checks[0].Output != "not yet checked" {
		t.Errorf("initial output %q", s.Checks[0].Output)
	}
	h.tick(1, time.Second)
	h.expect("web", Passing)

	// Three more runs with the same result say nothing...
	for i := 0; i < 3; i++ {
		h.tick(1, 10*time.Second)
	}
	h.tick(1, 0) // the third run has recorded its result and re-armed
	if got := h.exec.count("a"); got != 4 {
		t.Fatalf("%d runs, want 4", got)
	}
	// ...a new output does, and so does a new status.
	h.exec.set("a", 0, "ok, slower")
	h.tick(1, 10*time.Second)
	if s := h.expect("web", Passing); s.Checks[0].Output != "ok, slower" {
		t.Errorf("output %q", s.Checks[0].Output)
	}
	h.exec.set("a", 1, "ok, slower")
	h.tick(1, 10*time.Second)
	h.expect("web", Warning)
	select {
	case s := <-h.seen:
		t.Fatalf("unexpected notification %+v", s)
	default:
	}
}

// With an output interval, a change of output alone is told at most once
// per interval (the latest output then), while a status change is told at
// once, carrying the output with it.
func TestRunnerThrottlesOutputOnlyChanges(t *testing.T) {
	h := newHarnessWith(t, Options{OutputInterval: time.Minute})
	h.exec.set("a", 0, "ok 1")
	if err := h.r.SetServices([]Service{{ID: "web", Checks: []Definition{execCheck("c", "a")}}}); err != nil {
		t.Fatal(err)
	}
	h.expect("web", Critical)
	h.tick(1, time.Second) // t=1001: the first run
	h.expect("web", Passing)

	h.exec.set("a", 0, "ok 2")
	h.tick(1, 10*time.Second) // t=1011: output only, held back until 1061
	h.quiet()
	h.exec.set("a", 0, "ok 3")
	for range 4 { // t=1021 … 1051: the probe and the held-back flush
		h.tick(2, 10*time.Second)
		h.quiet()
	}
	h.tick(2, 10*time.Second) // t=1061: a minute since the last told
	if s := h.expect("web", Passing); s.Checks[0].Output != "ok 3" {
		t.Fatalf("flushed output %q, want the latest, ok 3", s.Checks[0].Output)
	}
	h.quiet()

	h.exec.set("a", 0, "ok 4")
	h.tick(1, 10*time.Second) // t=1071: held back until 1121
	h.quiet()
	h.exec.set("a", 1, "slow")
	h.tick(2, 10*time.Second) // t=1081: a status change goes out at once
	if s := h.expect("web", Warning); s.Checks[0].Output != "slow" {
		t.Fatalf("output with the status change %q", s.Checks[0].Output)
	}
	// An output change at 1091 is held back until a minute after 1081: the
	// flush armed at 1071 fires at 1121 and waits again, until 1141.
	h.exec.set("a", 1, "slow 2")
	for range 5 { // t=1091 … 1131
		h.tick(2, 10*time.Second)
		h.quiet()
	}
	h.tick(2, 10*time.Second) // t=1141
	if s := h.expect("web", Warning); s.Checks[0].Output != "slow 2" {
		t.Fatalf("flushed output %q, want slow 2", s.Checks[0].Output)
	}
	h.tick(1, 10*time.Second) // no flush left armed
	h.quiet()
}

func TestRunnerWorstOfChecks(t *testing.T) {
	h := newHarness(t)
	h.exec.set("ok", 0, "")
	h.exec.set("warn", 1, "")
	h.exec.set("bad", 2, "")
	if err := h.r.SetServices([]Service{
		{ID: "a", Checks: []Definition{execCheck("1", "ok"), execCheck("2", "warn")}},
		{ID: "b", Checks: []Definition{execCheck("1", "ok"), execCheck("2", "bad")}},
		{ID: "none"},
	}); err != nil {
		t.Fatal(err)
	}
	h.tick(4, time.Second)
	want := map[string]Status{"a": Warning, "b": Critical, "none": Passing}
	got := map[string]ServiceHealth{}
	for {
		s := h.next()
		got[s.ServiceID] = s
		done := len(got) == len(want)
		for id, st := range want {
			g := got[id]
			if g.Status != st || (id != "none" && g.Checks[0].Status != Passing) {
				done = false
			}
		}
		if done {
			break
		}
	}
	if all := h.r.All(); len(all) != 3 || all[0].ServiceID != "a" || all[2].ServiceID != "none" {
		t.Errorf("All: %+v", all)
	}
}

func TestRunnerTTL(t *testing.T) {
	h := newHarness(t)
	ttl := Definition{ID: "beat", Kind: KindTTL, TTL: 30 * time.Second}
	if err := h.r.SetServices([]Service{{ID: "job", Checks: []Definition{ttl, execCheck("x", "x")}}}); err != nil {
		t.Fatal(err)
	}
	h.expect("job", Critical)
	h.exec.set("x", 0, "")
	h.tick(1, time.Second)
	if s := h.expect("job", Critical); s.Checks[0].Status != Critical || s.Checks[1].Status != Passing {
		t.Fatalf("TTL not yet updated: %+v", s.Checks)
	}

	if err := h.r.UpdateTTL("job", "beat", Passing, "alive"); err != nil {
		t.Fatal(err)
	}
	h.expect("job", Passing)
	// Renewals before the TTL keep it passing; the clock passes 2×TTL.
	for i := 0; i < 4; i++ {
		h.tick(2, 20*time.Second) // the TTL timer and the exec check's
		out := fmt.Sprint("alive ", i)
		if err := h.r.UpdateTTL("job", "beat", Passing, out); err != nil {
			t.Fatal(err)
		}
		if s := h.expect("job", Passing); s.Checks[0].Output != out {
			t.Fatalf("renewal %d: %+v", i, s.Checks)
		}
	}
	h.tick(2, 31*time.Second)
	s := h.expect("job", Critical)
	if !strings.HasPrefix(s.Checks[0].Output, "TTL expired") || !strings.HasSuffix(s.Checks[0].Output, "alive 3") {
		t.Errorf("expired output %q", s.Checks[0].Output)
	}
	if err := h.r.UpdateTTL("job", "beat", Warning, "degraded"); err != nil {
		t.Fatal(err)
	}
	h.expect("job", Warning)

	for _, tc := range []struct {
		svc, check string
		want       error
	}{{"nope", "beat", ErrUnknownService}, {"job", "nope", ErrUnknownCheck}, {"job", "x", ErrNotTTL}} {
		if err := h.r.UpdateTTL(tc.svc, tc.check, Passing, ""); !errors.Is(err, tc.want) {
			t.Errorf("UpdateTTL(%s, %s): %v, want %v", tc.svc, tc.check, err, tc.want)
		}
	}
	if err := h.r.UpdateTTL("job", "beat", 0, ""); err == nil {
		t.Error("invalid status accepted")
	}
	if err := h.r.UpdateTTL("job", "beat", Passing, strings.Repeat("y", 10000)); err != nil {
		t.Fatal(err)
	}
	if s := h.expect("job", Passing); len(s.Checks[0].Output) > DefaultMaxOutput {
		t.Errorf("TTL output %d bytes", len(s.Checks[0].Output))
	}
}

func TestRunnerSetServicesKeepsUnchangedChecks(t *testing.T) {
	h := newHarness(t)
	h.exec.set("a", 0, "")
	h.exec.set("b", 0, "")
	if err := h.r.SetServices([]Service{{ID: "web", Checks: []Definition{execCheck("a", "a")}}}); err != nil {
		t.Fatal(err)
	}
	h.expect("web", Critical)
	h.tick(1, time.Second)
	h.expect("web", Passing)

	// Same check, plus a new one: the new one starts critical, the old keeps
	// passing.
	if err := h.r.SetServices([]Service{{ID: "web", Checks: []Definition{execCheck("a", "a"), execCheck("b", "b")}}}); err != nil {
		t.Fatal(err)
	}
	s := h.expect("web", Critical)
	if s.Checks[0].Status != Passing || s.Checks[1].Status != Critical {
		t.Fatalf("after adding: %+v", s.Checks)
	}
	h.tick(2, time.Second)
	h.expect("web", Passing)

	// A bad set changes nothing.
	bad := []Service{{ID: "web"}, {ID: "web"}}
	if err := h.r.SetServices(bad); err == nil {
		t.Fatal("duplicate service ids accepted")
	}
	if err := h.r.SetServices([]Service{{ID: "x", Checks: []Definition{{ID: "t", Kind: KindTTL}}}}); err == nil {
		t.Fatal("TTL without ttl accepted")
	}
	if got, _ := h.r.Health("web"); got.Status != Passing || len(got.Checks) != 2 {
		t.Fatalf("after refused sets: %+v", got)
	}

	// Removing the service, then adding it again, starts it afresh.
	if err := h.r.SetServices(nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.r.Health("web"); ok {
		t.Fatal("removed service still known")
	}
	if err := h.r.SetServices([]Service{{ID: "web", Checks: []Definition{execCheck("a", "a")}}}); err != nil {
		t.Fatal(err)
	}
	h.expect("web", Critical)
}

func TestRunnerStop(t *testing.T) {
	h := newHarness(t)
	if err := h.r.SetServices([]Service{{ID: "web", Checks: []Definition{
		execCheck("a", "a"), {ID: "t", Kind: KindTTL, TTL: time.Second},
	}}}); err != nil {
		t.Fatal(err)
	}
	h.r.Stop()
	h.r.Stop()
	if err := h.r.UpdateTTL("web", "t", Passing, ""); !errors.Is(err, ErrStopped) {
		t.Errorf("UpdateTTL after Stop: %v", err)
	}
	if err := h.r.SetServices(nil); !errors.Is(err, ErrStopped) {
		t.Errorf("SetServices after Stop: %v", err)
	}
}

// TestRunnerRealTCP runs the runner on the wall clock against a real
// listener that goes away.
func TestRunnerRealTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan ServiceHealth, 100)
	r := NewRunner(Options{Observer: func(s ServiceHealth) { seen <- s }})
	defer r.Stop()
	if err := r.SetServices([]Service{{ID: "db", Checks: []Definition{
		{ID: "tcp", Kind: KindTCP, TCP: ln.Addr().String(), Interval: 20 * time.Millisecond, Timeout: time.Second},
	}}}); err != nil {
		t.Fatal(err)
	}
	waitFor := func(st Status) {
		t.Helper()
		deadline := time.After(wait)
		for {
			select {
			case s := <-seen:
				if s.Status == st {
					return
				}
			case <-deadline:
				t.Fatalf("never %v", st)
			}
		}
	}
	waitFor(Passing)
	ln.Close()
	waitFor(Critical)
}
