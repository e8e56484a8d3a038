package raftnode_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode"
	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode/raftnodetest"
)

func propose(t *testing.T, c *raftnodetest.Cluster, item string) {
	t.Helper()
	if _, err := c.Propose([]byte(item)); err != nil {
		t.Fatalf("propose %q: %v", item, err)
	}
}

// converged waits until every running member has applied every item.
func converged(t *testing.T, c *raftnodetest.Cluster, items ...string) {
	t.Helper()
	for _, id := range c.Running() {
		l := c.List(id)
		raftnodetest.WaitFor(t, fmt.Sprintf("member %d to apply %d items", id, len(items)), 10*time.Second, func() bool {
			for _, it := range items {
				if !l.Has(it) {
					return false
				}
			}
			return true
		})
	}
}

func others(c *raftnodetest.Cluster, id uint64) []uint64 {
	var out []uint64
	for _, o := range c.Running() {
		if o != id {
			out = append(out, o)
		}
	}
	return out
}

func TestReplicatesAndSurvivesLeaderLoss(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	res, err := c.Propose([]byte("a0"))
	if err != nil || res != 1 {
		t.Fatalf("first proposal: %v, %v (want the list's length, 1)", res, err)
	}
	for i := 1; i < 10; i++ {
		propose(t, c, fmt.Sprint("a", i))
	}
	old := c.Leader().ID()
	c.Stop(old) // hands leadership over first
	propose(t, c, "after")
	if c.Leader().ID() == old {
		t.Fatal("stopped member still leads")
	}
	converged(t, c, "a0", "a9", "after")
}

// A leader stopped gracefully hands leadership over: a successor leads
// within a few ticks of the stop, well before the followers' election
// timeout (10 ticks, randomized up to 20) would have let one campaign.
func TestGracefulStopHandsLeadershipOver(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	propose(t, c, "before")
	old := c.Leader()
	start := time.Now()
	c.Stop(old.ID())
	limit := 5 * raftnode.TestConfig(1, "", nil).TickInterval
	for {
		took := time.Since(start)
		for _, id := range c.Running() {
			if c.Node(id).IsLeader() {
				if took > limit {
					t.Fatalf("member %x leads %v after the stop began, later than a handover's %v", id, took, limit)
				}
				propose(t, c, "after")
				return
			}
		}
		if took > limit {
			t.Fatalf("no successor %v after the leader's graceful stop began", limit)
		}
		time.Sleep(time.Millisecond)
	}
}

// One cluster on real gRPC over loopback: replication, a member's restart
// at the same address, and catching up over the stream.
func TestGRPCTransport(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList, raftnodetest.WithGRPC())
	for i := 0; i < 20; i++ {
		propose(t, c, fmt.Sprint("g", i))
	}
	converged(t, c, "g0", "g19")
	follower := others(c, c.Leader().ID())[0]
	c.Crash(follower)
	propose(t, c, "while-down")
	c.Restart(follower)
	propose(t, c, "after-restart")
	converged(t, c, "g0", "while-down", "after-restart")
	if got := len(c.List(follower).Items()); got != 22 {
		t.Fatalf("restarted member has %d items, want 22", got)
	}
}

func TestFollowerProposeSaysNotLeader(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	lead := c.Leader()
	n := c.Node(others(c, lead.ID())[0])
	raftnodetest.WaitFor(t, "the follower to learn the leader", 5*time.Second, func() bool { return n.Leader() == lead.ID() })
	_, err := n.Propose(context.Background(), []byte("x"), nil)
	var nl *raftnode.NotLeaderError
	if !errors.As(err, &nl) || nl.Leader != lead.ID() || !errors.Is(err, raftnode.ErrNotLeader) {
		t.Fatalf("follower propose: %v", err)
	}
	// A follower's read barrier goes through the leader.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	propose(t, c, "seen")
	if err := n.ReadIndex(ctx); err != nil {
		t.Fatalf("follower read index: %v", err)
	}
	if !c.List(n.ID()).Has("seen") {
		t.Fatal("read index returned before the follower applied a committed write")
	}
}

func TestCutOffFollowerFailsFast(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	lead := c.Leader()
	f := c.Node(others(c, lead.ID())[0])
	raftnodetest.WaitFor(t, "the follower to learn the leader", 5*time.Second, func() bool { return f.Leader() == lead.ID() })
	c.Net.Partition([]uint64{f.ID()}, others(c, f.ID()))
	raftnodetest.WaitFor(t, "the follower to see it is degraded", 5*time.Second, func() bool { bad, _ := f.Degraded(); return bad })
	start := time.Now()
	if err := f.ReadIndex(context.Background()); !errors.Is(err, raftnode.ErrNoQuorum) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("cut-off follower read index: %v after %v", err, time.Since(start))
	}
	if _, err := f.Propose(context.Background(), []byte("x"), nil); !errors.Is(err, raftnode.ErrNoQuorum) {
		t.Fatalf("cut-off follower propose: %v", err)
	}
	c.Net.Heal()
	raftnodetest.WaitFor(t, "the follower to hear from a leader again", 5*time.Second, func() bool { bad, _ := f.Degraded(); return !bad })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.ReadIndex(ctx); err != nil {
		t.Fatalf("healed follower read index: %v", err)
	}
}

func TestRestartRecoversEverythingFromDisk(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	var want []string
	for i := 0; i < 250; i++ { // past SnapshotEvery: a restart loads a snapshot and the log after it
		want = append(want, fmt.Sprint("w", i))
		propose(t, c, want[i])
	}
	// Crash (no leadership transfer, no goodbye): only what is on disk counts.
	for _, id := range c.Running() {
		c.Crash(id)
	}
	for _, id := range []uint64{1, 2, 3} {
		c.Restart(id)
	}
	propose(t, c, "after-restart")
	want = append(want, "after-restart")
	converged(t, c, want...)
	for _, id := range c.Running() {
		if got := c.List(id).Items(); !slices.Equal(got, want) {
			t.Fatalf("member %d recovered %d items, want %d in order", id, len(got), len(want))
		}
	}
}

func TestPartitionedMinorityFailsFastMajorityServes(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	lead := c.Leader()
	rest := others(c, lead.ID())
	c.Net.Partition([]uint64{lead.ID()}, rest)

	// The old leader notices within its quorum window, then fails fast.
	raftnodetest.WaitFor(t, "the old leader to see it is degraded", 5*time.Second, func() bool { bad, _ := lead.Degraded(); return bad })
	start := time.Now()
	_, err := lead.Propose(context.Background(), []byte("minority"), nil)
	if !errors.Is(err, raftnode.ErrNoQuorum) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("minority propose: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	if err := lead.ReadIndex(context.Background()); !errors.Is(err, raftnode.ErrNoQuorum) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("minority read index: %v after %v", err, time.Since(start))
	}
	if st := lead.Status(); !st.Degraded || st.Reason == "" {
		t.Fatalf("minority status does not say it is degraded: %+v", st)
	}

	// The majority elects a leader of its own and serves.
	var newLead *raftnode.Node
	raftnodetest.WaitFor(t, "a leader in the majority", 5*time.Second, func() bool {
		for _, id := range rest {
			if n := c.Node(id); n.IsLeader() {
				newLead = n
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := newLead.Propose(ctx, []byte("majority"), nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(rest[0]).ReadIndex(ctx); err != nil {
		t.Fatalf("majority follower read index: %v", err)
	}

	c.Net.Heal()
	converged(t, c, "majority")
	if c.List(lead.ID()).Has("minority") {
		t.Fatal("a write refused without quorum was applied")
	}
}

func TestLearnerCatchesUpFromSnapshotAndIsPromoted(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	for i := 0; i < 300; i++ { // several snapshots; the log is compacted behind them
		propose(t, c, fmt.Sprint("s", i))
	}
	learner := c.AddLearner(4)
	raftnodetest.WaitFor(t, "the learner to be promoted", 10*time.Second, func() bool {
		m := c.Member(4)
		return m != nil && !m.GetLearner()
	})
	propose(t, c, "with-four")
	converged(t, c, "s0", "s299", "with-four")
	if learner.AppliedIndex() < 300 {
		t.Fatalf("new member applied up to %d", learner.AppliedIndex())
	}
	st := c.Leader().Status()
	if !slices.Contains(st.Voters, 4) || len(st.Learners) != 0 || st.Progress[4].Match == 0 {
		t.Fatalf("leader status after promotion: %+v", st)
	}
}

func TestPromoteRefusesALearnerThatHasNotCaughtUp(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList,
		raftnodetest.WithConfig(func(cfg *raftnode.Config) { cfg.DisableAutoPromote = true }))
	propose(t, c, "x")
	for _, id := range c.Running() {
		c.Net.Cut(4, id) // the learner will not hear from anyone
	}
	c.AddLearner(4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Leader().PromoteLearner(ctx, 4)
	if err == nil || !strings.Contains(err.Error(), "caught up") {
		t.Fatalf("promoting a learner that is cut off: %v", err)
	}
	if st := c.Leader().Status(); !slices.Contains(st.Learners, 4) {
		t.Fatalf("learner missing from status: %+v", st)
	}

	// Once it hears from the leader and catches up, the same call succeeds.
	c.Net.Heal()
	raftnodetest.WaitFor(t, "the learner to catch up", 10*time.Second, func() bool { return c.List(4).Has("x") })
	raftnodetest.WaitFor(t, "promotion", 10*time.Second, func() bool {
		return c.Leader().PromoteLearner(ctx, 4) == nil
	})
	if m := c.Member(4); m == nil || m.GetLearner() {
		t.Fatalf("member 4 after promotion: %v", m)
	}
}

func TestRemoveMember(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	propose(t, c, "before")
	lead := c.Leader()
	gone := others(c, lead.ID())[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lead.RemoveMember(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if c.Member(gone) != nil {
		t.Fatal("removed member still listed")
	}
	c.Stop(gone)
	// Two voters left: both are needed, and they serve.
	propose(t, c, "after")
	converged(t, c, "before", "after")
	if st := c.Leader().Status(); len(st.Voters) != 2 || slices.Contains(st.Voters, gone) {
		t.Fatalf("voters after removal: %v", st.Voters)
	}
}

func TestLeaderChangeHookAndWaitApplied(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	lead := c.Leader()
	f := c.Node(others(c, lead.ID())[0])
	// Register once f knows the leader: the hook gets only later changes.
	for deadline := time.Now().Add(5 * time.Second); f.Leader() != lead.ID(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("member %d does not know the leader %d", f.ID(), lead.ID())
		}
	}
	changes := make(chan uint64, 16)
	f.OnLeaderChange(func(l uint64, isLeader bool) {
		if isLeader != (l == f.ID()) {
			t.Errorf("hook: leader %d, isLeader %v on member %d", l, isLeader, f.ID())
		}
		changes <- l
	})
	propose(t, c, "one")
	idx := c.Leader().AppliedIndex()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WaitApplied(ctx, idx); err != nil || f.AppliedIndex() < idx {
		t.Fatalf("WaitApplied(%d): %v, applied %d", idx, err, f.AppliedIndex())
	}
	c.Stop(lead.ID())
	select {
	case l := <-changes:
		if l == lead.ID() {
			t.Fatalf("hook reported the stopped leader %d", l)
		}
	case <-ctx.Done():
		t.Fatal("no leader change reported")
	}
}

// raft ignores a membership change proposed while another is pending;
// two changes made at once from the same leader must both complete.
func TestConcurrentMembershipChanges(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList,
		raftnodetest.WithConfig(func(cfg *raftnode.Config) { cfg.DisableAutoPromote = true }))
	lead := c.Leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for _, id := range []uint64{4, 5} {
		go func() {
			errs <- lead.AddLearner(ctx, &hivemindv1.Member{Id: id, Name: fmt.Sprint("n", id), PeerAddress: fmt.Sprint("mem-", id)})
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := lead.Status(); !slices.Equal(st.Learners, []uint64{4, 5}) {
		t.Fatalf("learners: %v", st.Learners)
	}
}

// A lossy, slow network: raft retransmits, and the waiters still get
// their results.
func TestLossyNetwork(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	c.Net.SetDrop(0.1)
	c.Net.SetDelay(time.Millisecond)
	var items []string
	for i := 0; i < 30; i++ {
		items = append(items, fmt.Sprint("l", i))
		propose(t, c, items[i])
	}
	c.Net.Heal()
	converged(t, c, items...)
}

func TestLeaderChangeHooksComeInOrder(t *testing.T) {
	c := raftnodetest.NewCluster(t, 3, raftnodetest.NewList)
	first := c.Leader()
	var mu sync.Mutex
	var seen []uint64
	n := c.Node(others(c, first.ID())[0])
	n.OnLeaderChange(func(l uint64, _ bool) {
		mu.Lock()
		seen = append(seen, l)
		mu.Unlock()
	})
	c.Stop(first.ID())
	second := c.Leader()
	raftnodetest.WaitFor(t, "the hook to report the new leader", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) > 0 && seen[len(seen)-1] == second.ID()
	})
}
