package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// listSM is an append-only list of strings.
type listSM struct {
	mu    sync.Mutex
	items []string
}

func (s *listSM) Apply(_ uint64, data []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, string(data))
	return len(s.items)
}

func (s *listSM) Snapshot() (func() ([]byte, error), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := append([]string(nil), s.items...)
	return func() ([]byte, error) { return json.Marshal(items) }, nil
}

func (s *listSM) Restore(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = nil
	return json.Unmarshal(b, &s.items)
}

func (s *listSM) has(item string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range s.items {
		if it == item {
			return true
		}
	}
	return false
}

type cluster struct {
	t     *testing.T
	net   *MemNetwork
	peers []*hivemindv1.Member
	dirs  map[uint64]string
	nodes map[uint64]*Node
	sms   map[uint64]*listSM
}

func newCluster(t *testing.T, n int) *cluster {
	c := &cluster{t: t, net: NewMemNetwork(), dirs: map[uint64]string{}, nodes: map[uint64]*Node{}, sms: map[uint64]*listSM{}}
	for i := 1; i <= n; i++ {
		c.peers = append(c.peers, &hivemindv1.Member{Id: uint64(i), Name: fmt.Sprintf("n%d", i), PeerAddress: fmt.Sprintf("mem-%d", i)})
		c.dirs[uint64(i)] = t.TempDir()
	}
	for i := 1; i <= n; i++ {
		c.start(uint64(i), false)
	}
	t.Cleanup(func() {
		for id := range c.nodes {
			c.stop(id)
		}
	})
	return c
}

func (c *cluster) start(id uint64, join bool) {
	c.t.Helper()
	cfg := TestConfig(id, c.dirs[id], c.peers)
	cfg.Join = join
	cfg.Transport = c.net.Transport(id)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	sm := &listSM{}
	n, err := New(cfg, sm)
	if err != nil {
		c.t.Fatal(err)
	}
	c.net.Attach(id, n)
	n.Start()
	c.nodes[id], c.sms[id] = n, sm
}

func (c *cluster) stop(id uint64) {
	n, ok := c.nodes[id]
	if !ok {
		return
	}
	c.net.Detach(id)
	_ = n.Stop(context.Background())
	delete(c.nodes, id)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *cluster) leader() *Node {
	c.t.Helper()
	var lead *Node
	waitFor(c.t, "a leader", 5*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.IsLeader() {
				if bad, _ := n.Degraded(); !bad {
					lead = n
					return true
				}
			}
		}
		return false
	})
	return lead
}

func (c *cluster) propose(item string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.leader().Propose(ctx, []byte(item))
	return err
}

func TestReplicatesAndSurvivesLeaderLoss(t *testing.T) {
	c := newCluster(t, 3)
	for i := 0; i < 10; i++ {
		if err := c.propose(fmt.Sprint("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	old := c.leader().ID()
	c.stop(old)
	if err := c.propose("after"); err != nil {
		t.Fatal(err)
	}
	if c.leader().ID() == old {
		t.Fatal("stopped node still leads")
	}
	for id, sm := range c.sms {
		if _, running := c.nodes[id]; running {
			waitFor(t, "replication", 5*time.Second, func() bool { return sm.has("after") && sm.has("a0") })
		}
	}
}

func TestFollowerProposeSaysNotLeader(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	for id, n := range c.nodes {
		if id == lead.ID() {
			continue
		}
		waitFor(t, "the follower to learn the leader", 5*time.Second, func() bool { return n.Leader() == lead.ID() })
		_, err := n.Propose(context.Background(), []byte("x"))
		var nl *NotLeaderError
		if !errors.As(err, &nl) || nl.Leader != lead.ID() {
			t.Fatalf("follower propose: %v", err)
		}
		return
	}
}

func TestRestartRecoversEverythingFromDisk(t *testing.T) {
	c := newCluster(t, 3)
	for i := 0; i < 250; i++ { // past SnapshotEvery, so restart uses a snapshot and the log after it
		if err := c.propose(fmt.Sprint("w", i)); err != nil {
			t.Fatal(err)
		}
	}
	for id := range c.nodes {
		c.stop(id)
	}
	for id := range c.dirs {
		c.start(id, false)
	}
	if err := c.propose("after-restart"); err != nil {
		t.Fatal(err)
	}
	for _, sm := range c.sms {
		waitFor(t, "recovered state", 5*time.Second, func() bool {
			sm.mu.Lock()
			defer sm.mu.Unlock()
			return len(sm.items) == 251
		})
		for i := 0; i < 250; i++ {
			if !sm.has(fmt.Sprint("w", i)) {
				t.Fatalf("acknowledged w%d lost", i)
			}
		}
	}
}

func TestPartitionedMinorityFailsFastMajorityServes(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	var others []uint64
	for id := range c.nodes {
		if id != lead.ID() {
			others = append(others, id)
		}
	}
	c.net.Partition([]uint64{lead.ID()}, others)

	// The old leader notices within its quorum window and fails fast.
	waitFor(t, "old leader degraded", 5*time.Second, func() bool { bad, _ := lead.Degraded(); return bad })
	start := time.Now()
	_, err := lead.Propose(context.Background(), []byte("minority"))
	if !errors.Is(err, ErrNoQuorum) || time.Since(start) > time.Second {
		t.Fatalf("minority propose: %v after %v", err, time.Since(start))
	}
	if err := lead.ReadIndex(context.Background()); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("minority read index: %v", err)
	}
	// The majority elects a leader of its own and serves.
	var newLead *Node
	waitFor(t, "majority leader", 5*time.Second, func() bool {
		for _, id := range others {
			if n := c.nodes[id]; n.IsLeader() {
				newLead = n
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := newLead.Propose(ctx, []byte("majority")); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[others[0]].ReadIndex(ctx); err != nil {
		t.Fatalf("majority follower read index: %v", err)
	}
	c.net.Heal()
	waitFor(t, "healed node catches up", 5*time.Second, func() bool { return c.sms[lead.ID()].has("majority") })
	if c.sms[lead.ID()].has("minority") {
		t.Fatal("a write refused without quorum was applied")
	}
}

func TestLearnerCatchesUpFromSnapshotAndIsPromoted(t *testing.T) {
	c := newCluster(t, 3)
	for i := 0; i < 300; i++ { // several snapshots; the log is compacted
		if err := c.propose(fmt.Sprint("s", i)); err != nil {
			t.Fatal(err)
		}
	}
	m := &hivemindv1.Member{Id: 4, Name: "n4", PeerAddress: "mem-4"}
	c.peers = append(c.peers, m)
	c.dirs[4] = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.leader().AddLearner(ctx, m); err != nil {
		t.Fatal(err)
	}
	c.start(4, true)
	waitFor(t, "learner promoted", 10*time.Second, func() bool {
		for _, mm := range c.leader().Members() {
			if mm.GetId() == 4 {
				return !mm.GetLearner()
			}
		}
		return false
	})
	if err := c.propose("with-four"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new member has everything", 5*time.Second, func() bool { return c.sms[4].has("s0") && c.sms[4].has("with-four") })

	if err := c.leader().RemoveMember(ctx, 4); err != nil {
		t.Fatal(err)
	}
	for _, mm := range c.leader().Members() {
		if mm.GetId() == 4 {
			t.Fatal("removed member still listed")
		}
	}
}
