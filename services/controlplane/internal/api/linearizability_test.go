package api_test

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
)

// The model: the whole control plane as one register map plus the global
// revision. Every answer carries the revision it reflects, so a history
// pins down its own order and checking stays fast.
type linInput struct {
	Op     string // put, get, cas, append
	Key    string
	Value  string
	Expect string // cas: compare value
}

type linOutput struct {
	Rev       int64
	Value     string
	Found     bool
	Succeeded bool
	// Unknown: the call failed, so it may or may not have taken effect.
	Unknown bool
}

type linState struct {
	Rev int64
	KV  map[string]string
}

var linModel = porcupine.Model{
	Init: func() any { return linState{KV: map[string]string{}} },
	Step: func(s, in, out any) (bool, any) {
		st, i, o := s.(linState), in.(linInput), out.(linOutput)
		write := func(k, v string) linState {
			kv := maps.Clone(st.KV)
			if k != "" {
				kv[k] = v
			}
			return linState{Rev: st.Rev + 1, KV: kv}
		}
		switch i.Op {
		case "put":
			return o.Unknown || o.Rev == st.Rev+1, write(i.Key, i.Value)
		case "append":
			return o.Unknown || o.Rev == st.Rev+1, write("", "")
		case "get":
			v, found := st.KV[i.Key]
			return o.Rev == st.Rev && o.Found == found && o.Value == v, st
		case "cas":
			if st.KV[i.Key] == i.Expect {
				return o.Unknown || (o.Succeeded && o.Rev == st.Rev+1), write(i.Key, i.Value)
			}
			return o.Unknown || (!o.Succeeded && o.Rev == st.Rev), st
		}
		return false, st
	},
	Equal: func(a, b any) bool {
		x, y := a.(linState), b.(linState)
		return x.Rev == y.Rev && maps.Equal(x.KV, y.KV)
	},
	DescribeOperation: func(in, out any) string {
		return fmt.Sprintf("%+v -> %+v", in, out)
	},
}

type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
	done  int // operations that completed successfully
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(client int, in linInput, call int64, out linOutput, failedRead bool) {
	if failedRead {
		return // a read that failed observed nothing
	}
	ret := h.now()
	if out.Unknown {
		ret = math.MaxInt64
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	if !out.Unknown {
		h.done++
	}
	h.mu.Unlock()
}

// runClient issues random operations until ctx ends.
func runClient(ctx context.Context, id int, cl *cpclient.Client, h *history, stale bool) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	last := map[string]string{}
	for n := 0; ctx.Err() == nil; n++ {
		key := fmt.Sprintf("/lin/k%d", rng.IntN(3))
		val := fmt.Sprintf("c%d-%d", id, n)
		opCtx, cancel := context.WithTimeout(ctx, time.Second)
		call := h.now()
		var in linInput
		var out linOutput
		var err error
		switch p := rng.IntN(100); {
		case p < 35:
			in = linInput{Op: "put", Key: key, Value: val}
			var r *hivemindv1.PutResponse
			if r, err = cl.Put(opCtx, &hivemindv1.PutRequest{Key: key, Value: []byte(val)}); err == nil {
				out.Rev = r.Header.Revision
			}
		case p < 70:
			in = linInput{Op: "get", Key: key}
			var r *hivemindv1.GetResponse
			if r, err = cl.Get(opCtx, &hivemindv1.GetRequest{Key: key, Stale: stale}); err == nil {
				out = linOutput{Rev: r.Header.Revision, Found: r.Found, Value: string(r.GetKv().GetValue())}
				last[key] = out.Value
			}
		case p < 85:
			in = linInput{Op: "cas", Key: key, Value: val, Expect: last[key]}
			var r *hivemindv1.TxnResponse
			r, err = cl.Txn(opCtx, &hivemindv1.TxnRequest{
				Compares: []*hivemindv1.Compare{{Key: key, Target: hivemindv1.Compare_TARGET_VALUE, Result: hivemindv1.Compare_RESULT_EQUAL, Value: []byte(in.Expect)}},
				Success:  []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: key, Value: []byte(val)}}}},
			})
			if err == nil {
				out = linOutput{Rev: r.Header.Revision, Succeeded: r.Succeeded}
			}
		default:
			in = linInput{Op: "append"}
			var r *hivemindv1.AppendEventResponse
			if r, err = cl.AppendEvent(opCtx, &hivemindv1.AppendEventRequest{Type: "lin.append", Uri: "/lin/events", Payload: []byte(val)}); err == nil {
				out.Rev = r.Header.Revision
			}
		}
		cancel()
		out.Unknown = err != nil
		h.add(id, in, call, out, err != nil && in.Op == "get")
	}
}

// watchRecorder keeps every response of a resuming watch from revision 1.
type watchRecorder struct {
	mu    sync.Mutex
	resps []*hivemindv1.WatchResponse
	last  int64
}

func (w *watchRecorder) record(r *hivemindv1.WatchResponse) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(r.Events) > 0 {
		w.resps = append(w.resps, r)
		w.last = r.Events[len(r.Events)-1].Revision
	}
	return nil
}

func (w *watchRecorder) lastRev() int64 { w.mu.Lock(); defer w.mu.Unlock(); return w.last }

// checkWatch compares what the watcher saw with the committed log: in
// order, no gap, no duplicate, and each revision whole in one response.
func checkWatch(t *testing.T, w *watchRecorder, log []*hivemindv1.Event) {
	t.Helper()
	byRev := map[int64][]*hivemindv1.Event{}
	for _, e := range log {
		byRev[e.Revision] = append(byRev[e.Revision], e)
	}
	var next int64 = 1
	for _, r := range w.resps {
		rev := r.Events[0].Revision
		if rev != next {
			t.Fatalf("watch: got revision %d, want %d (gap or duplicate)", rev, next)
		}
		want := byRev[rev]
		if len(r.Events) != len(want) {
			t.Fatalf("watch: revision %d split or padded: %d events, the log has %d", rev, len(r.Events), len(want))
		}
		for i, e := range r.Events {
			if e.Revision != rev || e.Id != want[i].Id {
				t.Fatalf("watch: revision %d event %d is %s, the log has %s", rev, i, e.Id, want[i].Id)
			}
		}
		next = rev + 1
	}
}

type fault func(c *cptest.Cluster, rng *rand.Rand) (undo func())

var faults = map[string]fault{
	"crash leader": func(c *cptest.Cluster, _ *rand.Rand) func() {
		l := c.Leader()
		c.CrashNode(l)
		return func() { c.StartNode(l) }
	},
	"stop leader": func(c *cptest.Cluster, _ *rand.Rand) func() {
		l := c.Leader()
		c.StopNode(l)
		return func() { c.StartNode(l) }
	},
	"partition leader": func(c *cptest.Cluster, _ *rand.Rand) func() {
		l := c.Leader()
		var rest []int
		for i := range c.Nodes {
			if i != l {
				rest = append(rest, i)
			}
		}
		c.Partition([]int{l}, rest)
		return c.Heal
	},
	"partition follower": func(c *cptest.Cluster, rng *rand.Rand) func() {
		l := c.Leader()
		f := (l + 1 + rng.IntN(2)) % 3
		var rest []int
		for i := range c.Nodes {
			if i != f {
				rest = append(rest, i)
			}
		}
		c.Partition([]int{f}, rest)
		return c.Heal
	},
}

func linRuns() int {
	if n, err := strconv.Atoi(os.Getenv("HIVEMIND_LIN_RUNS")); err == nil && n > 0 {
		return n
	}
	if testing.Short() {
		return 10
	}
	return 50
}

// TestLinearizableUnderFaults runs randomized concurrent histories against a
// 3-member cluster while a leader is crashed, stopped or partitioned away
// (or a follower is cut off), checks them with porcupine, and checks a
// resuming watch against the committed log. HIVEMIND_LIN_RUNS sets the
// number of runs (default 50; `make test-long` runs more).
func TestLinearizableUnderFaults(t *testing.T) {
	names := []string{"crash leader", "stop leader", "partition leader", "partition follower"}
	for run := 0; run < linRuns(); run++ {
		name := names[run%len(names)]
		t.Run(fmt.Sprintf("%03d-%s", run, name), func(t *testing.T) { linRun(t, faults[name], int64(run)) })
	}
}

func linRun(t *testing.T, f fault, seed int64) {
	c := cptest.Start(t, 3, cptest.Options{Faulty: true})
	c.Leader()
	h := &history{start: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	w := &watchRecorder{}
	watchCl := c.Client(cpclient.Config{MaxAttempts: 3, BackoffMax: 100 * time.Millisecond})
	watchDone := make(chan error, 1)
	go func() { watchDone <- watchCl.Watch(ctx, &hivemindv1.WatchRequest{StartRevision: 1}, w.record) }()

	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		cl := c.Client(cpclient.Config{MaxAttempts: 3, BackoffMax: 100 * time.Millisecond})
		wg.Add(1)
		go func(i int) { defer wg.Done(); runClient(ctx, i, cl, h, false) }(i)
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	time.Sleep(150 * time.Millisecond) // load before the fault
	undo := f(c, rng)
	time.Sleep(time.Duration(200+rng.IntN(300)) * time.Millisecond) // load during the fault
	undo()
	// Service must resume after the fault: wait for a good number of
	// further operations (however slow this machine is), not a fixed time.
	h.mu.Lock()
	before := h.done
	h.mu.Unlock()
	c.WaitFor("operations to succeed again after the fault", 20*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.done >= before+20
	})
	// Let the watch catch up with the final log before stopping it.
	leader := c.Nodes[c.Leader()].Replica
	final := leader.Machine().Revision()
	c.WaitFor("watch catches up", 10*time.Second, func() bool { return w.lastRev() >= final })
	cancel()
	wg.Wait()
	<-watchDone

	res, info := porcupine.CheckOperationsVerbose(linModel, h.ops, 30*time.Second)
	if res == porcupine.Illegal {
		path := fmt.Sprintf("%s/lin-%d.html", os.TempDir(), seed)
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(linModel, info, f)
			f.Close()
		}
		t.Fatalf("history of %d operations is not linearizable (visualisation in %s)", len(h.ops), path)
	}
	log, err := leader.Machine().EventsFrom(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	checkWatch(t, w, log)
}

// TestCheckerCatchesStaleReads shows the checker has teeth: reads served
// from an isolated old leader's local state (a broken read path) are
// reported as not linearizable.
func TestCheckerCatchesStaleReads(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{Faulty: true})
	h := &history{start: time.Now()}
	cl := c.Client(cpclient.Config{})
	in := linInput{Op: "put", Key: "/lin/k0", Value: "old"}
	call := h.now()
	r, err := cl.Put(ctx(t), &hivemindv1.PutRequest{Key: in.Key, Value: []byte(in.Value)})
	if err != nil {
		t.Fatal(err)
	}
	h.add(0, in, call, linOutput{Rev: r.Header.Revision}, false)

	old := c.Leader()
	c.WaitFor("every member applied the first write", 5*time.Second, func() bool {
		for _, n := range c.Nodes {
			if n.Replica.Machine().Revision() < r.Header.Revision {
				return false
			}
		}
		return true
	})
	var rest []int
	for i := range c.Nodes {
		if i != old {
			rest = append(rest, i)
		}
	}
	c.Partition([]int{old}, rest)
	majority := c.Client(cpclient.Config{Endpoints: []string{c.Nodes[rest[0]].Addr, c.Nodes[rest[1]].Addr}})
	in = linInput{Op: "put", Key: "/lin/k0", Value: "new"}
	call = h.now()
	r, err = majority.Put(ctx(t), &hivemindv1.PutRequest{Key: in.Key, Value: []byte(in.Value)})
	if err != nil {
		t.Fatal(err)
	}
	h.add(1, in, call, linOutput{Rev: r.Header.Revision}, false)

	// The broken read path: answer from the isolated member's local state.
	stale := c.Client(cpclient.Config{Endpoints: []string{c.Nodes[old].Addr}})
	in = linInput{Op: "get", Key: "/lin/k0"}
	call = h.now()
	g, err := stale.Get(ctx(t), &hivemindv1.GetRequest{Key: in.Key, Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	h.add(2, in, call, linOutput{Rev: g.Header.Revision, Found: g.Found, Value: string(g.Kv.GetValue())}, false)

	if res := porcupine.CheckOperationsTimeout(linModel, h.ops, 10*time.Second); res != porcupine.Illegal {
		t.Fatalf("checker says %s for a stale read after a newer write; want Illegal", res)
	}
}
