package backup_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/services/controlplane/internal/backup"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
)

// tick is slower than cptest's default: these tests stop and start whole
// clusters on a shared machine, and should not lose their quorum to it.
const tick = 100 * time.Millisecond

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// direct is a client bound to member i, without retries elsewhere.
func direct(t *testing.T, c *cptest.Cluster, i int) hivemindv1.ControlPlaneClient {
	conn, err := grpcclient.Dial(c.Nodes[i].Addr, grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return hivemindv1.NewControlPlaneClient(conn)
}

// putKeys writes n keys through member i and returns them, each as
// acknowledged.
func putKeys(t *testing.T, cp hivemindv1.ControlPlaneClient, prefix string, n int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k := range n {
		key, val := fmt.Sprintf("%s%04d", prefix, k), fmt.Sprintf("v%d", k)
		if _, err := cp.Put(ctx(t), &hivemindv1.PutRequest{Key: key, Value: []byte(val)}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		out[key] = val
	}
	return out
}

func saveSnapshot(t *testing.T, cp hivemindv1.ControlPlaneClient, path string) *hivemindv1.SnapshotHeader {
	t.Helper()
	st, err := cp.Snapshot(ctx(t), &hivemindv1.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := backup.Save(ctx(t), st, path)
	if err != nil {
		t.Fatal(err)
	}
	return hdr
}

// The snapshot at revision R holds exactly the keys a watcher from revision
// 1 has seen by R, while writes go on during the snapshot.
func TestSnapshotEqualsWatchedStateUnderConcurrentWrites(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{Tick: tick})
	lead := c.Leader()
	f := (lead + 1) % 3
	putKeys(t, direct(t, c, lead), "/app/before/", 100)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cp := direct(t, c, (lead+w)%3)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("/app/during/%d/%d", w, i%50)
				if i%7 == 6 {
					_, _ = cp.Delete(context.Background(), &hivemindv1.DeleteRequest{Key: key})
				} else if _, err := cp.Put(context.Background(), &hivemindv1.PutRequest{Key: key, Value: []byte(fmt.Sprint(i))}); err == nil {
					written.Add(1)
				}
			}
		}()
	}
	c.WaitFor("writes under way", 10*time.Second, func() bool { return written.Load() > 20 })
	path := filepath.Join(t.TempDir(), "s.hmsnap")
	hdr := saveSnapshot(t, direct(t, c, f), path)
	c.WaitFor("writes after the snapshot", 10*time.Second, func() bool { return written.Load() > 60 })
	close(stop)
	wg.Wait()

	_, snap, err := backup.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if hdr.GetMember() != c.Nodes[f].Name || hdr.GetClusterId() == 0 || hdr.GetRevision() != snap.GetRevision() {
		t.Fatalf("header %v: want member %s, a cluster id, revision %d", hdr, c.Nodes[f].Name, snap.GetRevision())
	}
	// Replay the watch up to R.
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	ws, err := direct(t, c, lead).Watch(wctx, &hivemindv1.WatchRequest{StartRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]*hivemindv1.KeyValue{}
	R := hdr.GetRevision()
	for done := false; !done; {
		resp, err := ws.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEvents() {
			if e.GetRevision() > R {
				done = true
				break
			}
			switch e.GetType() {
			case "kv.put":
				seen[e.GetKv().GetKey()] = e.GetKv()
			case "kv.delete":
				delete(seen, e.GetKv().GetKey())
			}
		}
		if resp.GetProgress() && resp.GetHeader().GetRevision() >= R {
			done = true
		}
	}
	if len(snap.GetKvs()) != len(seen) {
		t.Errorf("snapshot at %d has %d keys, the watcher saw %d", R, len(snap.GetKvs()), len(seen))
	}
	for _, kv := range snap.GetKvs() {
		if w, ok := seen[kv.GetKey()]; !ok || !proto.Equal(w, kv) {
			t.Errorf("key %s: snapshot %v, watcher %v", kv.GetKey(), kv, w)
		}
	}
}

// A snapshot restored into three new data directories starts a new cluster
// with every key, a new cluster id and the next epoch.
func TestRestoreMakesANewClusterWithTheSameState(t *testing.T) {
	old := cptest.Start(t, 3, cptest.Options{Tick: tick})
	lead := old.Leader()
	keys := putKeys(t, direct(t, old, lead), "/app/k/", 200)
	sub := "/notifier/subscriptions/s1"
	if _, err := direct(t, old, lead).Put(ctx(t), &hivemindv1.PutRequest{Key: sub, Value: []byte(`{"url":"http://x"}`)}); err != nil {
		t.Fatal(err)
	}
	keys[sub] = `{"url":"http://x"}`
	if _, err := direct(t, old, lead).ClaimIntent(ctx(t), &hivemindv1.ClaimIntentRequest{Key: "/intents/deliver/s1/e1", Holder: "n1"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.hmsnap")
	hdr := saveSnapshot(t, direct(t, old, (lead+2)%3), path)
	for i := range old.Nodes {
		old.CrashNode(i)
	}

	var restored []*backup.Restored
	c := cptest.Start(t, 3, cptest.Options{Tick: tick, Prepare: func(n *cptest.Node, peers []*hivemindv1.Member) {
		res, err := backup.Restore(backup.RestoreConfig{File: path, RaftDir: n.Dir, Name: n.Name, Cluster: peers})
		if err != nil {
			t.Fatalf("restore %s: %v", n.Name, err)
		}
		restored = append(restored, res)
	}})
	for _, r := range restored {
		if r.ClusterID != restored[0].ClusterID || r.ClusterID == hdr.GetClusterId() {
			t.Fatalf("cluster ids %x (old %x): every member must share one new id", r.ClusterID, hdr.GetClusterId())
		}
	}
	lead = c.Leader()
	for i := range c.Nodes {
		if got := c.Nodes[i].Replica.ClusterID(); got != restored[0].ClusterID {
			t.Errorf("%s runs in cluster %x, restored %x", c.Nodes[i].Name, got, restored[0].ClusterID)
		}
	}
	for key, val := range keys {
		resp, err := direct(t, c, (lead+1)%3).Get(ctx(t), &hivemindv1.GetRequest{Key: key})
		if err != nil || string(resp.GetKv().GetValue()) != val {
			t.Fatalf("get %s after restore: %v %v, want %q", key, resp, err, val)
		}
		if resp.GetHeader().GetEpoch() != hdr.GetEpoch()+1 {
			t.Fatalf("epoch %d after restore, want %d", resp.GetHeader().GetEpoch(), hdr.GetEpoch()+1)
		}
	}
	claim, err := direct(t, c, lead).ClaimIntent(ctx(t), &hivemindv1.ClaimIntentRequest{Key: "/intents/deliver/s1/e1", Holder: "n2"})
	if err != nil || claim.GetGranted() || claim.GetIntent().GetHolder() != "n1" {
		t.Fatalf("the intent held before the snapshot: %v %v; want still held by n1", claim, err)
	}
	resp, err := direct(t, c, lead).Put(ctx(t), &hivemindv1.PutRequest{Key: "/app/after", Value: []byte("x")})
	if err != nil || resp.GetHeader().GetRevision() <= hdr.GetRevision() {
		t.Fatalf("write after restore: %v %v; want a revision after %d", resp, err, hdr.GetRevision())
	}
}

// A damaged, cut or wrong-version file, or a directory already in use, is
// refused before anything is written.
func TestRestoreRefusesBeforeWriting(t *testing.T) {
	c := cptest.Start(t, 1, cptest.Options{Tick: tick})
	putKeys(t, direct(t, c, c.Leader()), "/app/k/", 10)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hmsnap")
	saveSnapshot(t, direct(t, c, 0), good)
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	peers := []*hivemindv1.Member{{Name: "cp1", PeerAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:1"}}
	flipped := append([]byte(nil), b...)
	flipped[len(flipped)/2] ^= 1
	version := append([]byte(nil), b...)
	version[len("HIVEMIND-SNAPSHOT\n")+3] = 9
	for name, data := range map[string][]byte{"flipped": flipped, "cut": b[:len(b)-100], "version": version} {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		raftDir := filepath.Join(dir, name+"-data", "raft")
		_, err := backup.Restore(backup.RestoreConfig{File: file, RaftDir: raftDir, Name: "cp1", Cluster: peers})
		if !errors.Is(err, backup.ErrDamaged) {
			t.Errorf("%s: %v, want ErrDamaged", name, err)
		}
		if _, err := os.Stat(raftDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %s exists after a refused restore (%v)", name, raftDir, err)
		}
	}
	// A member's directory in use is not overwritten.
	_, err = backup.Restore(backup.RestoreConfig{File: good, RaftDir: c.Nodes[0].Dir, Name: "cp1", Cluster: peers})
	if err == nil {
		t.Fatal("restore over a running member's directory succeeded")
	}
	if _, err := backup.Restore(backup.RestoreConfig{File: good, RaftDir: filepath.Join(dir, "x"), Name: "cp9", Cluster: peers}); err == nil {
		t.Fatal("restore as a member not in the cluster succeeded")
	}
}

// After losing two of three members for good, the third becomes a
// one-member cluster with every acknowledged write, and grows again.
func TestRecoverFromOneSurvivor(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{Tick: tick})
	lead := c.Leader()
	keys := putKeys(t, direct(t, c, lead), "/app/k/", 300)
	survivor := (lead + 1) % 3
	dir := c.Nodes[survivor].Dir
	// Raft cannot keep a write that only the lost members had; this test
	// is about keeping everything the survivor had.
	c.WaitFor("the survivor applied the leader's log", 10*time.Second, func() bool {
		return c.Nodes[survivor].Replica.Node().AppliedIndex() >= c.Nodes[lead].Replica.Node().AppliedIndex()
	})
	c.CrashNode(survivor)

	// The others still run: refused, and nothing changed.
	_, err := backup.Recover(ctx(t), backup.RecoverConfig{RaftDir: dir, Name: c.Nodes[survivor].Name, DialTimeout: time.Second})
	if !errors.Is(err, backup.ErrMembersReachable) {
		t.Fatalf("recover with the others running: %v, want ErrMembersReachable", err)
	}
	for i := range c.Nodes {
		c.CrashNode(i)
	}
	res, err := backup.Recover(ctx(t), backup.RecoverConfig{RaftDir: dir, Name: c.Nodes[survivor].Name, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(res.Saved); err != nil {
		t.Errorf("the old directory was not kept: %v", err)
	}
	c.StartNode(survivor)
	c.WaitFor("the survivor leads alone", 10*time.Second, func() bool { return c.Nodes[survivor].Replica.Node().IsLeader() })
	cp := direct(t, c, survivor)
	for key, val := range keys {
		resp, err := cp.Get(ctx(t), &hivemindv1.GetRequest{Key: key})
		if err != nil || string(resp.GetKv().GetValue()) != val {
			t.Fatalf("get %s after recovery: %v %v, want %q", key, resp, err, val)
		}
	}
	if _, err := cp.Put(ctx(t), &hivemindv1.PutRequest{Key: "/app/after", Value: []byte("x")}); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	// Grow back: a fresh member added the usual way gets everything.
	i := c.NewMember("cp4")
	n := c.Nodes[i]
	if _, err := cp.MemberAdd(ctx(t), &hivemindv1.MemberAddRequest{Name: n.Name, PeerAddress: n.Addr, GrpcAddress: n.Addr}); err != nil {
		t.Fatal(err)
	}
	c.StartNode(i)
	c.WaitFor("cp4 has every key", 15*time.Second, func() bool {
		resp, err := direct(t, c, i).Get(ctx(t), &hivemindv1.GetRequest{Key: "/app/after", Stale: true})
		return err == nil && resp.GetFound()
	})
	resp, err := direct(t, c, i).Range(ctx(t), &hivemindv1.RangeRequest{Prefix: "/app/k/"})
	if err != nil || len(resp.GetKvs()) != len(keys) {
		t.Fatalf("cp4 holds %d of %d keys (%v)", len(resp.GetKvs()), len(keys), err)
	}
}
