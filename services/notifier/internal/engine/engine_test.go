package engine_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// TestOutcomes runs one engine in-process against a real control plane
// and checks each final state: delivered, filter_error (the filter ran
// past its cost limit; the engine goes on), expired (not sent), and
// disabled (410, which writes the subscription back disabled).
func TestOutcomes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := clustertest.Start(t, clustertest.Options{})
	cp := c.ControlPlane()
	// Only notifier nodes write /notifier/: the engine runs as one, and
	// the subscriptions are stored as it, as the Notifier API would.
	c.JoinAs("notifier1", auth.RoleNotifier)
	rcv := newReceiver(t, testSecret)
	ok := httptest.NewServer(rcv)
	t.Cleanup(ok.Close)
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }))
	t.Cleanup(gone.Close)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := subscription.NewStore(c.ControlPlaneAs("notifier1"))
	for _, s := range []*hivemindv1.Subscription{
		{Name: "ok", Target: ok.URL, Prefix: "/app/ok/", Secret: testSecret},
		// Costs far more than the replica's limit of 200 units.
		{Name: "costly", Target: ok.URL, Prefix: "/app/cost/", Secret: testSecret,
			Filter: `[1,2,3,4,5,6,7,8,9,10].all(x, [1,2,3,4,5,6,7,8,9,10].all(y, x * y > 0))`},
		{Name: "gone", Target: gone.URL, Prefix: "/app/gone/", Secret: testSecret},
	} {
		if _, err := store.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := newEngine(replicaConfig{Name: "notifier1", Endpoints: c.ControlPlaneAddrs(), SecretFile: c.SecretFile(), KeyDir: c.KeyDir("notifier1"), Lease: 2 * time.Second},
		slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- eng.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-stopped })
	<-eng.Loaded()

	appendEv := func(uri string, ttl *hivemindv1.EventTTL) {
		if _, err := cp.AppendEvent(ctx, &hivemindv1.AppendEventRequest{Type: "test.event", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: uri, Ttl: ttl}); err != nil {
			t.Fatal(err)
		}
	}
	appendEv("/app/ok/1", nil)
	appendEv("/app/ok/expired", &hivemindv1.EventTTL{ExpiresAt: timestamppb.New(time.Now().Add(-time.Second))})
	appendEv("/app/cost/1", nil)
	appendEv("/app/gone/1", nil)
	appendEv("/app/ok/2", nil) // after the failures: the engine goes on

	want := map[string][]string{"ok": {"delivered", "expired", "delivered"}, "costly": {"filter_error"}, "gone": {"disabled"}}
	for sub, states := range want {
		c.WaitFor(sub+" deliveries", 30*time.Second, func(ctx context.Context) bool {
			ds, err := store.ListDeliveries(ctx, sub, 0)
			if err != nil || len(ds) != len(states) {
				return false
			}
			for i, d := range ds { // newest first
				if d.GetState() != states[len(states)-1-i] {
					return false
				}
			}
			return true
		})
	}
	if got, repeats, bad := rcv.counts(); got != 2 || repeats != 0 || bad != 0 {
		t.Errorf("receiver: %d events, %d repeats, %d bad; want 2, 0, 0", got, repeats, bad)
	}
	s, _, err := store.Get(ctx, "gone")
	if err != nil || !s.GetDisabled() || s.GetDisabledReason() == "" {
		t.Errorf("after 410 the subscription is %v (%v), want disabled with a reason", s, err)
	}
}
