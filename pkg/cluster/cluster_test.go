package cluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
	"google.golang.org/protobuf/types/known/durationpb"
)

func members(ctx context.Context, t *testing.T, c *clustertest.Cluster, via string) map[string]*hivemindv1.MemberView {
	resp, err := hivemindv1.NewMembershipClient(c.Dial(via)).ListMembers(ctx, &hivemindv1.ListMembersRequest{})
	if err != nil {
		return nil
	}
	out := map[string]*hivemindv1.MemberView{}
	for _, m := range resp.GetMembers() {
		out[m.GetMember().GetName()] = m
	}
	return out
}

func state(ms map[string]*hivemindv1.MemberView, name string) hivemindv1.MemberState {
	return ms[name].GetMember().GetState()
}

// TestHostLifeThroughTheRegistry runs real processes: a host joins through
// the control plane, is seen by every role, fails when killed, and comes
// back as the same single member when restarted.
func TestHostLifeThroughTheRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := clustertest.Start(t, clustertest.Options{})
	c.Add("host1", "host")
	c.WaitHealthy("host1", 30*time.Second)
	c.Add("dns1", "dns", "--seeds", c.Nodes["host1"].GRPC) // joins through the host, which forwards
	c.WaitHealthy("dns1", 30*time.Second)

	alive := hivemindv1.MemberState_MEMBER_STATE_ALIVE
	c.WaitFor("5 alive members seen from dns1, registry and gossip agreeing", 20*time.Second, func(ctx context.Context) bool {
		ms := members(ctx, t, c, "dns1")
		if len(ms) != 5 {
			return false
		}
		for _, m := range ms {
			if m.GetMember().GetState() != alive || m.GetGossip().GetState() != "alive" {
				return false
			}
		}
		return true
	})

	c.Kill("host1")
	killed := time.Now()
	c.WaitFor("host1 failed in the registry", 20*time.Second, func(ctx context.Context) bool {
		return state(members(ctx, t, c, "cp1"), "host1") == hivemindv1.MemberState_MEMBER_STATE_FAILED
	})
	t.Logf("host1 failed in the registry %s after SIGKILL", time.Since(killed).Round(time.Millisecond))

	before := members(context.Background(), t, c, "cp2")["host1"].GetMember().GetIncarnation()
	st, err := c.ControlPlane().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.Restart("host1")
	c.WaitFor("host1 alive again, newer, one record", 30*time.Second, func(ctx context.Context) bool {
		ms := members(ctx, t, c, "cp3")
		return len(ms) == 5 && state(ms, "host1") == alive && ms["host1"].GetMember().GetIncarnation() > before &&
			ms["host1"].GetGossip().GetState() == "alive"
	})
	// A new life joins once: the notifier tells subscribers "joined" per
	// member.joined event. Give a second join (a retry, or a rejoin that
	// gossip prompted during the first) time to be committed first.
	time.Sleep(3 * time.Second)
	if n := joinedEvents(t, c, "host1", st.GetAppliedRevision()+1); n != 1 {
		t.Fatalf("host1 restarted: %d member.joined events, want 1", n)
	}
}

// joinedEvents counts the member.joined events for name committed from
// revision from on, reading the log until the watch reports it is idle.
func joinedEvents(t *testing.T, c *clustertest.Cluster, name string, from int64) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	errIdle := errors.New("idle")
	err := c.ControlPlane().Watch(ctx, &hivemindv1.WatchRequest{
		StartRevision: from, Prefix: registry.Key(name), Types: []string{registry.EventJoined},
		ProgressInterval: durationpb.New(500 * time.Millisecond),
	}, func(r *hivemindv1.WatchResponse) error {
		if r.GetProgress() {
			return errIdle
		}
		n += len(r.GetEvents())
		return nil
	})
	if !errors.Is(err, errIdle) {
		t.Fatalf("watching member.joined events: %v", err)
	}
	return n
}

// TestWrongSecretIsRefused: a node with another secret can neither
// authenticate to join nor gossip its way in.
func TestWrongSecretIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := clustertest.Start(t, clustertest.Options{})
	other := filepath.Join(t.TempDir(), "other-secret")
	if err := os.WriteFile(other, []byte("another-cluster-entirely-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Add("intruder", "host", "--cluster-secret-file", other)
	c.Add("host1", "host")
	c.WaitHealthy("host1", 30*time.Second)
	// Give the intruder as long as host1 took and then some.
	time.Sleep(3 * time.Second)
	ms := members(context.Background(), t, c, "cp1")
	if _, ok := ms["intruder"]; ok || len(ms) != 4 {
		t.Fatalf("members %v: the intruder got in, or someone is missing", keys(ms))
	}
}

func keys(m map[string]*hivemindv1.MemberView) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestCompactionMovesEveryNodeToTheNewEpoch: Compact advances the epoch;
// tickets of the old epoch stop being accepted, and every node joins again
// by itself and gossips a ticket for the new one.
func TestCompactionMovesEveryNodeToTheNewEpoch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := clustertest.Start(t, clustertest.Options{})
	c.Add("host1", "host")
	c.WaitHealthy("host1", 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Watch member events from the start, through a role that is not on
	// the control plane.
	stream, err := hivemindv1.NewMembershipClient(c.Dial("host1")).WatchMembers(ctx, &hivemindv1.WatchMembersRequest{StartRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || len(first.GetEvents()) == 0 || first.GetEvents()[0].GetType() != "member.joined" {
		t.Fatalf("first member events: %v, %v", first, err)
	}

	cp := c.ControlPlane()
	st, err := cp.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hivemindv1.NewControlPlaneClient(c.Dial("cp1")).Compact(ctx, &hivemindv1.CompactRequest{Revision: st.GetAppliedRevision()})
	if err != nil {
		t.Fatal(err)
	}
	epoch := resp.GetEpoch()
	if epoch <= st.GetEpoch() {
		t.Fatalf("compact left the epoch at %d", epoch)
	}
	c.WaitFor("every node gossiping a ticket of the new epoch, all alive", 30*time.Second, func(ctx context.Context) bool {
		ms := members(ctx, t, c, "host1")
		if len(ms) != 4 {
			return false
		}
		for _, m := range ms {
			if m.GetGossip().GetEpoch() != epoch || m.GetGossip().GetState() != "alive" || state(ms, m.GetMember().GetName()) != hivemindv1.MemberState_MEMBER_STATE_ALIVE {
				return false
			}
		}
		return true
	})
}
