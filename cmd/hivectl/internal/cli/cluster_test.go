package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// hivectl runs commands against one cluster with its operator token.
type hivectl struct {
	t   *testing.T
	env map[string]string
}

func (h *hivectl) run(stdin string, args ...string) (int, string, string) {
	h.t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := h.env[k]; return v, ok }
	code := Run(context.Background(), args, strings.NewReader(stdin), &out, &errb, lookup)
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed and returns its output.
func (h *hivectl) ok(args ...string) string {
	h.t.Helper()
	code, out, errs := h.run("", args...)
	if code != ExitOK {
		h.t.Fatalf("hivectl %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// json runs a command with -o json and decodes its one object.
func (h *hivectl) json(v any, args ...string) {
	h.t.Helper()
	out := h.ok(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		h.t.Fatalf("hivectl %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestCommandsAgainstACluster runs the commands against a real cluster
// (3 control-plane nodes, a host, a dns processor, a notifier) and checks
// what they print and how they exit.
func TestCommandsAgainstACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := clustertest.Start(t, clustertest.Options{})
	c.Add("host1", "host", "--include-loopback")
	c.Add("dns1", "dns")
	c.Add("notifier1", "notifier", "--egress-allow-loopback")
	for _, n := range []string{"host1", "dns1", "notifier1"} {
		c.WaitHealthy(n, 60*time.Second)
	}
	h := &hivectl{t: t, env: map[string]string{
		"HIVEMIND_ENDPOINTS": strings.Join(c.ControlPlaneAddrs(), ","),
		"HIVEMIND_TOKEN":     c.Token,
	}}

	t.Run("put get del", func(t *testing.T) {
		if out := h.ok("put", "/app/web/config", "port=8080"); !strings.HasPrefix(out, "OK /app/web/config revision ") {
			t.Fatalf("put: %q", out)
		}
		var got struct {
			KV kvOut `json:"kv"`
		}
		h.json(&got, "get", "/app/web/config")
		if got.KV.Value == nil || *got.KV.Value != "port=8080" || got.KV.ValueBase64 != "" || got.KV.Version != 1 {
			t.Fatalf("get: %+v", got.KV)
		}
		// A binary value read from stdin comes back as base64.
		if code, _, errs := h.run("\xff\x00bin", "put", "/app/web/blob"); code != ExitOK {
			t.Fatalf("put from stdin: %d %s", code, errs)
		}
		var list struct {
			KVs []kvOut `json:"kvs"`
		}
		h.json(&list, "get", "--prefix", "/app/web/")
		if len(list.KVs) != 2 || list.KVs[0].Key != "/app/web/blob" || list.KVs[0].ValueBase64 != "/wBiaW4=" || list.KVs[0].Value != nil {
			t.Fatalf("get --prefix: %+v", list.KVs)
		}
		file := filepath.Join(t.TempDir(), "v")
		if err := os.WriteFile(file, []byte("from a file"), 0o600); err != nil {
			t.Fatal(err)
		}
		h.ok("put", "/app/web/file", "--file", file)
		if out := h.ok("get", "/app/web/file"); !strings.Contains(out, "from a file") {
			t.Fatalf("get after put --file: %q", out)
		}
		h.ok("del", "/app/web/file")
		if code, _, errs := h.run("", "get", "/app/web/file"); code != ExitNotFound || !strings.Contains(errs, "/app/web/file not found") {
			t.Fatalf("get of a deleted key: exit %d, %q", code, errs)
		}
		if code, _, _ := h.run("", "del", "/app/web/file"); code != ExitNotFound {
			t.Fatalf("del of a missing key: exit %d", code)
		}
	})

	t.Run("watch and events", func(t *testing.T) {
		var first struct {
			KV kvOut `json:"kv"`
		}
		h.json(&first, "get", "/app/web/config")
		h.ok("put", "/app/web/config", "v2")
		h.ok("put", "/app/web/other", "x")
		// From a revision, bounded by --timeout: history of the key only.
		out := h.ok("watch", "/app/web/config", "--rev", itoa(first.KV.ModRevision), "--timeout", "5s", "-o", "json")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("watch: want 2 lines, got %q", out)
		}
		var e eventOut
		if err := json.Unmarshal([]byte(lines[1]), &e); err != nil || e.Type != "kv.put" || e.Payload == nil || *e.Payload != "v2" {
			t.Fatalf("watch line 2: %v %+v", err, e)
		}
		out = h.ok("events", "--type", "kv.put", "--prefix", "/app/web/", "--since", itoa(first.KV.ModRevision))
		if !strings.Contains(out, "/app/web/other") || !strings.HasPrefix(out, "REVISION") || strings.Contains(out, "member.") {
			t.Fatalf("events: %q", out)
		}
		out = h.ok("events", "append", "deploy.started", "/app/web", "--payload", `{"version":"1.2.3"}`, "-o", "json")
		if err := json.Unmarshal([]byte(out), &e); err != nil || e.Type != "deploy.started" || e.Source == "" {
			t.Fatalf("events append: %v %q", err, out)
		}
		if code, _, errs := h.run("", "events", "append", "kv.put", "/app/x"); code != ExitError || !strings.Contains(errs, "permission denied") {
			t.Fatalf("appending kv.put: exit %d %q", code, errs)
		}
	})

	t.Run("txn", func(t *testing.T) {
		var cur struct {
			KV kvOut `json:"kv"`
		}
		h.json(&cur, "get", "/app/web/config")
		src := "ver(\"/app/web/config\") = \"" + itoa(cur.KV.Version) + "\"\n\nput /app/web/config \"v 3\"\nget /app/web/config\n\nget /app/web/config\n"
		code, out, errs := h.run(src, "txn")
		if code != ExitOK || !strings.HasPrefix(out, "SUCCESS") || !strings.Contains(out, `v 3`) {
			t.Fatalf("txn: %d %q %q", code, out, errs)
		}
		// The same compare again fails: the failure branch runs.
		code, out, _ = h.run(src, "txn", "-o", "json")
		var r struct {
			Succeeded bool `json:"succeeded"`
			Results   []struct {
				Op string `json:"op"`
				KV *kvOut `json:"kv"`
			} `json:"results"`
		}
		if err := json.Unmarshal([]byte(out), &r); code != ExitOK || err != nil || r.Succeeded || len(r.Results) != 1 || r.Results[0].Op != "get" || *r.Results[0].KV.Value != "v 3" {
			t.Fatalf("txn failure branch: %d %v %q", code, err, out)
		}
	})

	t.Run("status and members", func(t *testing.T) {
		var st statusOut
		h.json(&st, "status")
		if st.Leader == "" || st.Degraded || st.Revision == 0 || len(st.Members) != 6 {
			t.Fatalf("status: %+v", st)
		}
		voters := 0
		for _, m := range st.Members {
			if m.Raft == "voter" {
				voters++
			}
			if m.Health != "SERVING" {
				t.Errorf("status: %s health %q", m.Name, m.Health)
			}
		}
		if voters != 3 {
			t.Errorf("status: %d voters, want 3", voters)
		}
		// Any member's address is enough: a host's.
		hostEnv := &hivectl{t: t, env: map[string]string{"HIVEMIND_ENDPOINTS": c.Nodes["host1"].GRPC, "HIVEMIND_TOKEN": c.Token}}
		out := hostEnv.ok("members", "list")
		for _, n := range []string{"cp1", "cp2", "cp3", "host1", "dns1", "notifier1"} {
			if !strings.Contains(out, n) {
				t.Errorf("members list through host1 lacks %s:\n%s", n, out)
			}
		}
		if out := hostEnv.ok("get", "/app/web/config"); !strings.Contains(out, "v 3") {
			t.Errorf("get through a host endpoint: %q", out)
		}
	})

	t.Run("catalog", func(t *testing.T) {
		c.WaitFor("host1's record", 30*time.Second, func(context.Context) bool {
			code, out, _ := h.run("", "hosts")
			return code == ExitOK && strings.Contains(out, "host1")
		})
		h.ok("announce", "web", "web-1", "10.0.0.5:8080", "--ttl", "1m", "--meta", "v=1")
		var d struct {
			Instances []announcementOut `json:"instances"`
		}
		h.json(&d, "discover", "web")
		if len(d.Instances) != 1 || d.Instances[0].Address != "10.0.0.5:8080" || d.Instances[0].Meta["v"] != "1" || d.Instances[0].Node != "host1" {
			t.Fatalf("discover: %+v", d)
		}
		if out := h.ok("services", "web"); !strings.Contains(out, "web-1") || !strings.Contains(out, "announced") {
			t.Fatalf("services: %q", out)
		}
		h.ok("withdraw", "web", "web-1")
		if code, _, _ := h.run("", "discover", "web"); code != ExitNotFound {
			t.Fatalf("discover after withdraw: exit %d", code)
		}
		var lk struct {
			Rcode    string   `json:"rcode"`
			Answer   []string `json:"answer"`
			Revision int64    `json:"revision"`
		}
		c.WaitFor("dns1 to answer for host1", 30*time.Second, func(context.Context) bool {
			code, out, _ := h.run("", "dns", "lookup", "host1.node.hive", "-o", "json")
			return code == ExitOK && json.Unmarshal([]byte(out), &lk) == nil && len(lk.Answer) > 0
		})
		if lk.Rcode != "NOERROR" || lk.Revision == 0 || !strings.Contains(lk.Answer[0], "127.0.0.1") {
			t.Fatalf("dns lookup: %+v", lk)
		}
		if code, _, _ := h.run("", "dns", "lookup", "nope.node.hive"); code != ExitNotFound {
			t.Fatalf("NXDOMAIN: exit %d", code)
		}
	})

	t.Run("subscriptions", func(t *testing.T) {
		out := h.ok("subs", "create", "web-changes", "http://127.0.0.1:9/hook", "--prefix", "/app/web/")
		if !strings.Contains(out, "whsec_") {
			t.Fatalf("subs create shows no secret: %q", out)
		}
		var l struct {
			Subscriptions []subOut `json:"subscriptions"`
		}
		h.json(&l, "subs", "list")
		if len(l.Subscriptions) != 1 || l.Subscriptions[0].Prefix != "/app/web/" {
			t.Fatalf("subs list: %+v", l)
		}
		var d deliveryOut
		h.json(&d, "subs", "test", "web-changes")
		if len(d.Attempts) == 0 || d.Attempts[0].Error == "" {
			t.Fatalf("subs test to a closed port: %+v", d)
		}
		h.ok("deliveries", "web-changes")
		h.ok("subs", "delete", "web-changes")
		if code, _, errs := h.run("", "subs", "get", "web-changes"); code != ExitNotFound {
			t.Fatalf("subs get after delete: %d %q", code, errs)
		}
	})

	t.Run("intents", func(t *testing.T) {
		cp := c.ControlPlane()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cp.ClaimIntent(ctx, &hivemindv1.ClaimIntentRequest{Key: "/jobs/nightly", Holder: "worker-1"}); err != nil {
			t.Fatal(err)
		}
		var l struct {
			Intents []intentOut `json:"intents"`
		}
		h.json(&l, "intents", "list", "--prefix", "/jobs/")
		if len(l.Intents) != 1 || l.Intents[0].Holder != "worker-1" || l.Intents[0].State != "claimed" {
			t.Fatalf("intents list: %+v", l)
		}
		h.ok("intents", "release", "/jobs/nightly", "--holder", "worker-1")
		h.json(&l, "intents", "list", "--prefix", "/jobs/")
		if len(l.Intents) != 1 || l.Intents[0].State != "released" {
			t.Fatalf("intents list after release: %+v", l)
		}
	})

	t.Run("ping", func(t *testing.T) {
		out := h.ok("ping", "host1", "--role", "controlplane", "-o", "json")
		if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 3 || !strings.Contains(out, `"received":3`) {
			t.Fatalf("ping: want 3 lines of results, got %q", out)
		}
	})

	// Last: these change what the subtests above rely on.
	t.Run("compact", func(t *testing.T) {
		var st statusOut
		h.json(&st, "status")
		var r struct {
			Epoch          uint64 `json:"epoch"`
			OldestRevision int64  `json:"oldest_revision"`
		}
		h.json(&r, "compact", itoa(st.Revision))
		if r.Epoch <= st.Epoch || r.OldestRevision != st.Revision {
			t.Fatalf("compact %d: %+v (epoch before %d)", st.Revision, r, st.Epoch)
		}
		code, _, errs := h.run("", "watch", "--prefix", "/", "--rev", "1", "--timeout", "5s")
		if code != ExitError || !strings.Contains(errs, "out of range") || !strings.Contains(errs, itoa(st.Revision)) {
			t.Fatalf("watch of compacted history: exit %d %q", code, errs)
		}
	})

	t.Run("members remove", func(t *testing.T) {
		out := h.ok("members", "remove", "notifier1")
		if !strings.HasPrefix(out, "removed notifier1") || strings.Contains(out, "raft") {
			t.Fatalf("members remove: %q", out)
		}
		var l struct {
			Members []memberOut `json:"members"`
		}
		h.json(&l, "members", "list")
		for _, m := range l.Members {
			if m.Name == "notifier1" && m.State != "left" {
				t.Fatalf("notifier1 after remove: %+v", m)
			}
		}
	})

	t.Run("bad connections", func(t *testing.T) {
		bad := &hivectl{t: t, env: map[string]string{"HIVEMIND_ENDPOINTS": h.env["HIVEMIND_ENDPOINTS"], "HIVEMIND_TOKEN": "hmo_wrong"}}
		code, out, errs := bad.run("", "get", "/app/web/config")
		if code != ExitError || !strings.HasPrefix(errs, "hivectl: token refused") || strings.Count(errs, "\n") != 1 || out != "" {
			t.Fatalf("refused token: %d %q %q", code, out, errs)
		}
		gone := &hivectl{t: t, env: map[string]string{"HIVEMIND_ENDPOINTS": "127.0.0.1:1", "HIVEMIND_TOKEN": c.Token}}
		code, _, errs = gone.run("", "status")
		if code != ExitError || !strings.Contains(errs, "unavailable (endpoints 127.0.0.1:1): connect: connection refused") || strings.Count(errs, "\n") != 1 {
			t.Fatalf("unreachable: %d %q", code, errs)
		}
	})

	// The leader dies: the control-plane client moves to the others, and
	// status shows the dead member without calling the cluster degraded.
	t.Run("leader killed", func(t *testing.T) {
		var st statusOut
		h.json(&st, "status")
		dead := st.Leader
		c.Kill(dead)
		// Within the election, a write may find no leader; the client
		// retries for a few seconds, the test gives a loaded machine more.
		c.WaitFor("a write after the leader died", 30*time.Second, func(context.Context) bool {
			code, _, _ := h.run("", "put", "/app/failover", "yes")
			return code == ExitOK
		})
		if out := h.ok("get", "/app/failover"); !strings.Contains(out, "yes") {
			t.Fatalf("get after failover: %q", out)
		}
		c.WaitFor("a new leader", 30*time.Second, func(context.Context) bool {
			code, out, _ := h.run("", "status", "-o", "json")
			return code == ExitOK && json.Unmarshal([]byte(out), &st) == nil && st.Leader != "" && !st.Degraded
		})
		if st.Leader == dead {
			t.Fatalf("status names the killed %s as leader", dead)
		}
		for _, m := range st.Members {
			if m.Name == dead && m.Health != "unreachable" {
				t.Errorf("killed %s: health %q, want unreachable", dead, m.Health)
			}
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
