package gossip

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hivemind/hivemind/pkg/secret"
)

func TestFiveAgentsSeeEachOther(t *testing.T) {
	as := cluster(t, 5, 1, nil)
	for _, a := range as {
		ms := a.Members()
		if len(ms) != 5 {
			t.Fatalf("%s sees %d members, want 5", a.cfg.Name, len(ms))
		}
		for name, m := range ms {
			if m.Meta.GRPCAddr != "127.0.0.1:7000" || m.Meta.Epoch != 1 || len(m.Meta.Roles) != 1 || m.Meta.Incarnation != 1 {
				t.Errorf("%s sees %s with meta %+v", a.cfg.Name, name, m.Meta)
			}
		}
	}
	waitFor(t, 5*time.Second, "a probe answered", func() bool {
		for name, m := range as[0].Members() {
			if name != as[0].cfg.Name && !m.LastContact.IsZero() && m.RTT > 0 {
				return true
			}
		}
		return false
	})
}

func TestWrongSecretCannotJoin(t *testing.T) {
	as := cluster(t, 2, 1, nil)
	c := testConfig(t, "intruder", 1)
	c.Secret = mustSecret("some other cluster's secret")
	c.Meta.Ticket = issue(t, c.Secret, "intruder", 1)
	in := start(t, c)
	if _, err := in.Join([]string{addr(as[0])}); err == nil {
		t.Fatal("join with the wrong secret succeeded")
	}
	for _, a := range as {
		if _, ok := a.Members()["intruder"]; ok {
			t.Errorf("%s admitted a node with the wrong secret", a.cfg.Name)
		}
	}
	if n := len(in.Members()); n != 1 {
		t.Errorf("intruder sees %d members, want only itself", n)
	}
}

// A node that has the gossip key but no valid ticket for the current
// epoch gets past encryption, and must be refused by every member.
func TestNodeWithoutValidTicketIsRefused(t *testing.T) {
	const epoch = 3
	name := "raw"
	other := mustSecret("a secret that is not the cluster's")
	cases := []struct {
		name string
		meta func(t *testing.T) []byte
	}{
		{"no meta", func(*testing.T) []byte { return nil }},
		{"no ticket", func(*testing.T) []byte { return encode(t, Meta{Epoch: epoch, Incarnation: 1}) }},
		{"forged ticket", func(t *testing.T) []byte {
			return encode(t, Meta{Ticket: issue(t, other, name, epoch), Epoch: epoch, Incarnation: 1})
		}},
		{"ticket for another node", func(t *testing.T) []byte {
			return encode(t, Meta{Ticket: issue(t, testSecret, "node-a", epoch), Epoch: epoch, Incarnation: 1})
		}},
		{"ticket for an older epoch", func(t *testing.T) []byte {
			return encode(t, Meta{Ticket: issue(t, testSecret, name, epoch-1), Epoch: epoch - 1, Incarnation: 1})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			regs := make([]*prometheus.Registry, 3)
			i := 0
			as := cluster(t, 3, epoch, func(c *Config) {
				regs[i] = prometheus.NewRegistry()
				c.Registerer = regs[i]
				i++
			})
			raw := startRaw(t, name, tc.meta(t))
			// Contact every member directly: one that refuses the node does
			// not gossip it on, so the others might otherwise only hear of
			// it from its own few broadcasts.
			_, _ = raw.Join([]string{addr(as[0]), addr(as[1]), addr(as[2])})
			for i, a := range as {
				waitFor(t, 10*time.Second, a.cfg.Name+" refuses the raw node", func() bool {
					return refusals(regs[i]) > 0
				})
			}
			for _, a := range as {
				if _, ok := a.Members()[name]; ok {
					t.Errorf("%s admitted %s", a.cfg.Name, name)
				}
				if n := len(a.Members()); n != 3 {
					t.Errorf("%s has %d members, want 3", a.cfg.Name, n)
				}
			}
		})
	}
}

func encode(t testing.TB, m Meta) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func refusals(r *prometheus.Registry) float64 {
	mfs, _ := r.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "hivemind_gossip_refused_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// startRaw starts a bare memberlist node that knows the gossip key.
func startRaw(t *testing.T, name string, meta []byte) *memberlist.Memberlist {
	t.Helper()
	c := memberlist.DefaultLocalConfig()
	tc := TestConfig(name)
	c.Name, c.BindAddr, c.BindPort, c.AdvertisePort = name, "127.0.0.1", 0, 0
	c.ProbeInterval, c.ProbeTimeout, c.GossipInterval, c.PushPullInterval = tc.ProbeInterval, tc.ProbeTimeout, tc.GossipInterval, tc.PushPullInterval
	c.SecretKey = testSecret.Key(secret.PurposeGossip)
	c.Delegate = rawMeta(meta)
	c.Logger = newMemberlistLogger(testLogger(), func(string) {})
	ml, err := memberlist.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}

type rawMeta []byte

func (m rawMeta) NodeMeta(int) []byte                  { return m }
func (rawMeta) NotifyMsg([]byte)                       {}
func (rawMeta) GetBroadcasts(int, int) [][]byte        { return nil }
func (rawMeta) LocalState(bool) []byte                 { return nil }
func (rawMeta) MergeRemoteState(buf []byte, join bool) {}

func TestKilledNodeBecomesDead(t *testing.T) {
	var recs []*recorder
	as := cluster(t, 5, 1, func(c *Config) {
		r := &recorder{}
		recs = append(recs, r)
		c.Observer = r
	})
	victim := as[4]
	limit := victim.cfg.FailureDetectionTime(5)
	killed := time.Now()
	if err := victim.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, a := range as[:4] {
		waitFor(t, limit-time.Since(killed), a.cfg.Name+" sees the killed node dead", func() bool {
			return a.Members()[victim.cfg.Name].State == StateDead
		})
	}
	t.Logf("all saw it dead after %v (bound %v)", time.Since(killed), limit)
	suspected := false
	for i, r := range recs[:4] {
		if !r.saw(EventDead, victim.cfg.Name) {
			t.Errorf("%s's observer was not told of the death", as[i].cfg.Name)
		}
		suspected = suspected || r.saw(EventSuspect, victim.cfg.Name)
	}
	if !suspected {
		t.Error("no observer was told the killed node was suspect")
	}
}

func TestLeaveBecomesLeft(t *testing.T) {
	var recs []*recorder
	as := cluster(t, 4, 1, func(c *Config) {
		r := &recorder{}
		recs = append(recs, r)
		c.Observer = r
	})
	leaver := as[3]
	if err := leaver.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := leaver.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for i, a := range as[:3] {
		waitFor(t, 5*time.Second, a.cfg.Name+" sees the node left", func() bool {
			return a.Members()[leaver.cfg.Name].State == StateLeft
		})
		if recs[i].saw(EventDead, leaver.cfg.Name) {
			t.Errorf("%s was told the leaver died", a.cfg.Name)
		}
	}
}

// A node restarted from its data directory on another port takes its name
// back with a newer generation; every member keeps one record for it.
func TestRestartAtNewAddressReplacesRecord(t *testing.T) {
	as := cluster(t, 4, 1, nil)
	old := as[3]
	c := old.cfg
	oldAddr := addr(old)
	if err := old.Shutdown(); err != nil {
		t.Fatal(err)
	}
	c.BindPort, c.AdvertisePort = 0, 0
	back := start(t, c)
	if addr(back) == oldAddr {
		t.Fatalf("restarted on the same address %s", oldAddr)
	}
	if g := back.LocalNode().Meta.Incarnation; g != 2 {
		t.Fatalf("generation after restart = %d, want 2", g)
	}
	if _, err := back.Join([]string{addr(as[0])}); err != nil {
		t.Fatal(err)
	}
	// The old record must be declared dead first; then the name moves.
	limit := 2*c.FailureDetectionTime(4) + 2*c.PushPullInterval
	for _, a := range append(as[:3], back) {
		waitFor(t, limit, a.cfg.Name+" sees the restarted node alive at its new address", func() bool {
			m := a.Members()[c.Name]
			return m.State == StateAlive && m.Addr == addr(back) && m.Meta.Incarnation == 2
		})
		n := 0
		for name, m := range a.Members() {
			if name == c.Name || m.Addr == oldAddr {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s has %d records for %s", a.cfg.Name, n, c.Name)
		}
	}
}

func TestNewerEpochTriggersHook(t *testing.T) {
	type call struct {
		epoch uint64
		from  string
	}
	got := make(chan call, 10)
	as := cluster(t, 3, 1, func(c *Config) {
		c.OnNewerEpoch = func(e uint64, from string) { got <- call{e, from} }
	})
	n := start(t, testConfig(t, "newer", 2))
	if _, err := n.Join([]string{addr(as[0])}); err != nil {
		t.Fatal(err)
	}
	seen := map[call]int{}
	deadline := time.After(10 * time.Second)
	for len(seen) == 0 || seen[call{2, "newer"}] < len(as) {
		select {
		case c := <-got:
			seen[c]++
		case <-deadline:
			t.Fatalf("hook calls %v, want {2 newer} from each of %d agents", seen, len(as))
		}
	}
	if len(seen) != 1 {
		t.Errorf("hook calls %v, want only {2 newer}", seen)
	}
	for _, a := range as {
		if a.Epoch() != 2 {
			t.Errorf("%s epoch %d, want 2", a.cfg.Name, a.Epoch())
		}
		// Alive, eventually: on a loaded machine a probe may suspect it
		// for a moment before it refutes.
		waitFor(t, 10*time.Second, a.cfg.Name+" sees the newer-epoch node alive", func() bool {
			m, ok := a.Members()["newer"]
			return ok && m.State == StateAlive
		})
	}
	// Re-admitted at the new epoch, a node is accepted again.
	if err := as[1].SetTicket(issue(t, testSecret, as[1].cfg.Name, 2), 2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the new ticket is seen", func() bool {
		return n.Members()[as[1].cfg.Name].Meta.Epoch == 2
	})
}

func TestMetaLimit(t *testing.T) {
	long := strings.Repeat("n", maxNameLength)
	m := Meta{
		Roles:       []string{"controlplane", "host", "dns", "notifier"},
		GRPCAddr:    "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
		Ticket:      issue(t, testSecret, long, 1<<62),
		Epoch:       1 << 62,
		Incarnation: 1 << 62,
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("metadata for a %d-byte name: %d of %d bytes", len(long), len(b), MaxMetaSize)
	back, err := DecodeMeta(b)
	if err != nil || back.GRPCAddr != m.GRPCAddr || back.Epoch != m.Epoch || back.Incarnation != m.Incarnation || len(back.Roles) != 4 || string(back.Ticket) != string(m.Ticket) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}

	// Such a node runs and is admitted.
	as := cluster(t, 1, 1<<62, nil)
	c := testConfig(t, long, 1<<62)
	c.Meta = m
	a := start(t, c)
	if _, err := a.Join([]string{addr(as[0])}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the long-named node is seen", func() bool {
		return as[0].Members()[long].State == StateAlive
	})

	// Too much does not fit, and is refused before memberlist sees it.
	big := strings.Repeat("h", 200) + ":1"
	if err := a.SetMeta(m.Roles, big, time.Second); !errors.Is(err, ErrMeta) {
		t.Fatalf("SetMeta with a %d-byte address: %v, want ErrMeta", len(big), err)
	}
	c2 := testConfig(t, long, 1)
	c2.Meta.Ticket, c2.Meta.GRPCAddr = m.Ticket, big
	if _, err := New(c2); !errors.Is(err, ErrMeta) {
		t.Fatalf("New with oversized meta: %v, want ErrMeta", err)
	}
}

func TestMetaDecodeRejectsGarbage(t *testing.T) {
	good := encode(t, Meta{Roles: []string{"dns"}, GRPCAddr: "a:1", Ticket: []byte{1, 2}, Epoch: 1, Incarnation: 2})
	for name, b := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{9}, good[1:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte(nil), good...), 0),
	} {
		if _, err := DecodeMeta(b); !errors.Is(err, ErrMeta) {
			t.Errorf("%s: %v, want ErrMeta", name, err)
		}
	}
}

func TestGenerationRisesOnEveryStart(t *testing.T) {
	dir := t.TempDir()
	if g, err := LoadGeneration(dir); err != nil || g != 0 {
		t.Fatalf("fresh dir: %d, %v", g, err)
	}
	for want := uint64(1); want <= 3; want++ {
		c := testConfig(t, "gen", 1)
		c.DataDir = dir
		a := start(t, c)
		if g := a.LocalNode().Meta.Incarnation; g != want {
			t.Fatalf("start %d: generation %d", want, g)
		}
		_ = a.Shutdown()
	}
	if g, err := LoadGeneration(dir); err != nil || g != 3 {
		t.Fatalf("after three starts: %d, %v", g, err)
	}
}

func TestShutdownIsFinal(t *testing.T) {
	a := start(t, testConfig(t, "once", 1))
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := a.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Leave after Shutdown: %v", err)
	}
}

func TestGenerationFileFormats(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, GenerationFile)
	// Version 1, the bare number, is still read, and rewritten as version 2.
	if err := os.WriteFile(path, []byte("7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if g, err := raiseGeneration(dir); err != nil || g != 8 {
		t.Fatalf("raise from a version 1 file: %d, %v", g, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "hivemind-generation 2\n8\n" {
		t.Fatalf("file now %q", b)
	}
	// A newer format is refused, naming both versions, and left alone.
	if err := os.WriteFile(path, []byte("hivemind-generation 3\n9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := raiseGeneration(dir)
	if err == nil || !strings.Contains(err.Error(), "version 3") || !strings.Contains(err.Error(), "up to 2") {
		t.Fatalf("newer format: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "hivemind-generation 3\n9\n" {
		t.Fatalf("refused file was changed: %q", b)
	}
}
