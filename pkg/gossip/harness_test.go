package gossip

import (
	"crypto/ed25519"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/ticket"
)

var testSecret = mustSecret("hivemind test cluster secret")

func mustSecret(s string) secret.Secret {
	sec, err := secret.New([]byte(s))
	if err != nil {
		panic(err)
	}
	return sec
}

// issuerKey is the ticket-signing key of control-plane member "cp1" in a
// cluster with secret sec: another cluster's tickets do not verify here.
func issuerKey(sec secret.Secret) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(sec.Key("hivemind test ticket issuer")[:ed25519.SeedSize])
}

// testIssuers knows the test cluster's control-plane member cp1.
var testIssuers = ticket.Keys(map[string]ed25519.PublicKey{"cp1": issuerKey(testSecret).Public().(ed25519.PublicKey)})

func issue(t testing.TB, sec secret.Secret, name string, epoch uint64) []byte {
	t.Helper()
	priv := issuerKey(sec)
	raw, err := ticket.Sign(func(m []byte) []byte { return ed25519.Sign(priv, m) }, ticket.Ticket{Name: name, Issuer: "cp1", Epoch: epoch, IssuedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func testLogger() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is TestConfig with an admission ticket for epoch.
func testConfig(t testing.TB, name string, epoch uint64) Config {
	c := TestConfig(name)
	c.Secret = testSecret
	c.Issuers = testIssuers
	c.DataDir = t.TempDir()
	c.Logger = testLogger()
	c.Meta = Meta{Roles: []string{"host"}, GRPCAddr: "127.0.0.1:7000", Ticket: issue(t, testSecret, name, epoch), Epoch: epoch}
	return c
}

func start(t testing.TB, c Config) *Agent {
	t.Helper()
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	return a
}

func addr(a *Agent) string { return a.LocalNode().Addr }

// cluster starts n agents at epoch and joins them through the first.
func cluster(t testing.TB, n int, epoch uint64, adjust func(*Config)) []*Agent {
	t.Helper()
	var as []*Agent
	for i := range n {
		c := testConfig(t, nodeName(i), epoch)
		if adjust != nil {
			adjust(&c)
		}
		a := start(t, c)
		if i > 0 {
			if _, err := a.Join([]string{addr(as[0])}); err != nil {
				t.Fatal(err)
			}
		}
		as = append(as, a)
	}
	for _, a := range as {
		waitFor(t, 10*time.Second, a.cfg.Name+" sees all alive", func() bool { return countState(a, StateAlive) == n })
	}
	return as
}

func nodeName(i int) string { return "node-" + string(rune('a'+i)) }

func countState(a *Agent, s State) int {
	k := 0
	for _, m := range a.Members() {
		if m.State == s {
			k++
		}
	}
	return k
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is an Observer that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) MemberEvent(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) saw(typ EventType, name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Type == typ && e.Member.Name == name {
			return true
		}
	}
	return false
}
