package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
)

// These tests run the commands of docs/operations.md as written there,
// against in-process clusters: the file names and flags are the runbook's.

const tick = 100 * time.Millisecond

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code, ok := subcommand(ctx(t), args, &out, &out)
	if !ok {
		t.Fatalf("%v is not a subcommand", args)
	}
	return code, out.String()
}

func client(t *testing.T, addr string) hivemindv1.ControlPlaneClient {
	conn, err := grpcclient.Dial(addr, grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return hivemindv1.NewControlPlaneClient(conn)
}

func putKeys(t *testing.T, cp hivemindv1.ControlPlaneClient, n int) {
	t.Helper()
	for i := range n {
		if _, err := cp.Put(ctx(t), &hivemindv1.PutRequest{Key: fmt.Sprintf("/app/k%03d", i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
}

func countKeys(t *testing.T, cp hivemindv1.ControlPlaneClient) int {
	t.Helper()
	resp, err := cp.Range(ctx(t), &hivemindv1.RangeRequest{Prefix: "/app/k"})
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.GetKvs())
}

// initialCluster renders peers as --initial-cluster.
func initialCluster(peers []*hivemindv1.Member) string {
	var parts []string
	for _, p := range peers {
		parts = append(parts, p.GetName()+"="+p.GetPeerAddress())
	}
	return strings.Join(parts, ",")
}

// Back up, then lose everything and restore from the file.
func TestRunbookBackUpAndRestore(t *testing.T) {
	old := cptest.Start(t, 3, cptest.Options{Tick: tick})
	lead := old.Leader()
	putKeys(t, client(t, old.Nodes[lead].Addr), 100)
	file := filepath.Join(t.TempDir(), "backup.hmsnap")
	code, out := run(t, "snapshot", "save", "--endpoint", old.Nodes[(lead+1)%3].Addr, "--token", "hmo_ops", file)
	if code != 0 || !strings.Contains(out, "format 1, revision 100") {
		t.Fatalf("snapshot save: exit %d: %s", code, out)
	}
	if code, out := run(t, "snapshot", "status", file); code != 0 || !strings.Contains(out, "keys: 100") {
		t.Fatalf("snapshot status: exit %d: %s", code, out)
	}
	for i := range old.Nodes {
		old.CrashNode(i)
	}
	// A damaged copy is refused, naming why, and prepares nothing.
	b, _ := os.ReadFile(file)
	b[len(b)/2] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.hmsnap")
	os.WriteFile(bad, b, 0o600)
	badDir := filepath.Join(t.TempDir(), "cp1")
	code, out = run(t, "restore", "--snapshot", bad, "--data-dir", badDir, "--node-name", "cp1", "--initial-cluster", "cp1=127.0.0.1:1")
	if code != 1 || !strings.Contains(out, "SHA-256 mismatch") {
		t.Fatalf("restore of a damaged file: exit %d: %s", code, out)
	}
	if _, err := os.Stat(badDir); err == nil {
		t.Fatalf("restore of a damaged file created %s", badDir)
	}

	c := cptest.Start(t, 3, cptest.Options{Tick: tick, Prepare: func(n *cptest.Node, peers []*hivemindv1.Member) {
		dataDir := filepath.Join(t.TempDir(), n.Name)
		code, out := run(t, "restore", "--snapshot", file, "--data-dir", dataDir, "--node-name", n.Name, "--initial-cluster", initialCluster(peers))
		if code != 0 || !strings.Contains(out, "restored revision 100") {
			t.Fatalf("restore %s: exit %d: %s", n.Name, code, out)
		}
		n.Dir = filepath.Join(dataDir, "raft")
	}})
	lead = c.Leader()
	if got := countKeys(t, client(t, c.Nodes[lead].Addr)); got != 100 {
		t.Fatalf("%d keys after restore, want 100", got)
	}
}

// Lose two members for good; recover from the third; add a fresh member.
func TestRunbookRecoverFromOneMember(t *testing.T) {
	dataDirs := map[string]string{}
	c := cptest.Start(t, 3, cptest.Options{Tick: tick, Prepare: func(n *cptest.Node, _ []*hivemindv1.Member) {
		dataDirs[n.Name] = filepath.Join(t.TempDir(), n.Name)
		n.Dir = filepath.Join(dataDirs[n.Name], "raft")
	}})
	lead := c.Leader()
	putKeys(t, client(t, c.Nodes[lead].Addr), 100)
	s := (lead + 2) % 3
	c.WaitFor("the survivor applied the leader's log", 10*time.Second, func() bool {
		return c.Nodes[s].Replica.Node().AppliedIndex() >= c.Nodes[lead].Replica.Node().AppliedIndex()
	})
	c.CrashNode(s)
	name := c.Nodes[s].Name
	code, out := run(t, "recover", "--data-dir", dataDirs[name], "--node-name", name)
	if code != 1 || !strings.Contains(out, "other members are reachable") {
		t.Fatalf("recover while the others run: exit %d: %s", code, out)
	}
	for i := range c.Nodes {
		c.CrashNode(i)
	}
	code, out = run(t, "recover", "--data-dir", dataDirs[name], "--node-name", name)
	if code != 0 || !strings.Contains(out, "recovered revision 100") {
		t.Fatalf("recover: exit %d: %s", code, out)
	}
	c.StartNode(s)
	c.WaitFor("the survivor leads alone", 10*time.Second, func() bool { return c.Nodes[s].Replica.Node().IsLeader() })
	cp := client(t, c.Nodes[s].Addr)
	if got := countKeys(t, cp); got != 100 {
		t.Fatalf("%d keys after recovery, want 100", got)
	}
	i := c.NewMember("cp4")
	if _, err := cp.MemberAdd(ctx(t), &hivemindv1.MemberAddRequest{Name: "cp4", PeerAddress: c.Nodes[i].Addr, GrpcAddress: c.Nodes[i].Addr}); err != nil {
		t.Fatal(err)
	}
	c.StartNode(i)
	c.WaitFor("cp4 is a voter", 20*time.Second, func() bool {
		resp, err := cp.MemberList(ctx(t), &hivemindv1.MemberListRequest{})
		if err != nil {
			return false
		}
		for _, m := range resp.GetMembers() {
			if m.GetName() == "cp4" {
				return !m.GetLearner()
			}
		}
		return false
	})
}

func TestSubcommandsRefuseBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"snapshot", "save", "f"}, "--token"},
		{[]string{"snapshot", "save", "--token", "x"}, "exactly one FILE"},
		{[]string{"restore", "--node-name", "cp1", "--initial-cluster", "cp1=a:1"}, "--snapshot"},
		{[]string{"restore", "--snapshot", "f", "--node-name", "cp1", "--initial-cluster", "cp1"}, "not name=host:port"},
		{[]string{"recover"}, "--node-name"},
	} {
		code, out := run(t, tc.args...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d: %s; want 2 and %q", tc.args, code, out, tc.want)
		}
	}
}
