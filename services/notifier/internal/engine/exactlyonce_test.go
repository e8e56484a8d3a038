package engine_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// eventCount is the number of events of the exactly-once test:
// HIVEMIND_NOTIFIER_EVENTS, or a few hundred so make test stays quick.
func eventCount(t *testing.T) int {
	if s := os.Getenv("HIVEMIND_NOTIFIER_EVENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 10 {
			t.Fatalf("HIVEMIND_NOTIFIER_EVENTS=%q: want a number ≥ 10", s)
		}
		return n
	}
	return 300
}

// TestExactlyOnce runs 3 replicas as processes against a real control
// plane, SIGKILLs one a third of the way through and cuts another off from
// the control plane for a while halfway through. Every event must reach
// the receiver; a webhook-id may repeat only where a replica stopped
// between sending and completing, and the repeats are reported.
func TestExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	n := eventCount(t)
	c := clustertest.Start(t, clustertest.Options{})
	cp := c.ControlPlane()
	rcv := newReceiver(t, testSecret)
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Only notifier nodes write /notifier/: the replicas run as such, and
	// the subscription is stored as one, as the Notifier API would.
	for i := 1; i <= 3; i++ {
		c.JoinAs(fmt.Sprintf("notifier%d", i), auth.RoleNotifier)
	}
	store := subscription.NewStore(c.ControlPlaneAs("notifier1"))
	if _, err := store.Create(ctx, &hivemindv1.Subscription{Name: "exact", Target: srv.URL + "/hook", Prefix: "/app/exact/", Secret: testSecret}); err != nil {
		t.Fatal(err)
	}

	const lease = 2 * time.Second
	logDir := t.TempDir()
	var proxies []*proxy
	var procs []*replicaProc
	for i := 1; i <= 3; i++ {
		var eps []string
		for _, a := range c.ControlPlaneAddrs() {
			p := newProxy(t, a)
			proxies = append(proxies, p)
			eps = append(eps, p.addr())
		}
		procs = append(procs, startReplica(t, replicaConfig{Name: fmt.Sprintf("notifier%d", i), Endpoints: eps, SecretFile: c.SecretFile(), KeyDir: c.KeyDir(fmt.Sprintf("notifier%d", i)), Lease: lease}, logDir))
	}
	cutReplica2 := func(cut bool) {
		for _, p := range proxies[3:6] {
			p.setCut(cut)
		}
	}

	start := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	var healed sync.WaitGroup
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			switch i {
			case n / 3:
				procs[0].kill()
				t.Logf("SIGKILLed notifier1 after %d events", i)
			case n / 2:
				cutReplica2(true)
				t.Logf("cut notifier2 off from the control plane after %d events", i)
				healed.Add(1)
				// The cut is a fault that lasts, not a synchronisation.
				time.AfterFunc(3*time.Second, func() { cutReplica2(false); t.Log("notifier2 reconnected"); healed.Done() })
			}
			next <- i
		}
	}()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				_, err := cp.AppendEvent(ctx, &hivemindv1.AppendEventRequest{Type: "test.event", Hook: hivemindv1.Hook_HOOK_CREATE, Uri: fmt.Sprintf("/app/exact/%d", i), Payload: []byte(`{"i":` + strconv.Itoa(i) + `}`)})
				if err != nil {
					t.Errorf("append %d: %v", i, err)
					return
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	committed := time.Since(start)

	for {
		got, _, _ := rcv.counts()
		if got == n {
			break
		}
		select {
		case <-rcv.changed:
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatalf("only %d of %d events reached the receiver", got, n)
		}
	}
	healed.Wait()
	got, repeats, bad := rcv.counts()
	t.Logf("%d events committed in %v, all %d received after %v; repeated webhook-ids: %d", sent.Load(), committed.Round(time.Millisecond), got, time.Since(start).Round(time.Millisecond), repeats)
	if bad > 0 {
		t.Errorf("%d requests had a bad signature or body", bad)
	}
	// Only claims in progress when notifier1 died or notifier2 was cut off
	// can repeat: at most one lease's worth of their concurrent deliveries.
	if repeats > 2*64 {
		t.Errorf("%d repeats: more than the deliveries two replicas can have in flight", repeats)
	}

	// Every delivery is recorded as delivered, once per event.
	c.WaitFor("every delivery recorded", time.Minute, func(ctx context.Context) bool {
		ds, err := store.ListDeliveries(ctx, "exact", 0)
		if err != nil {
			return false
		}
		delivered := 0
		for _, d := range ds {
			if d.GetState() == "delivered" {
				delivered++
			}
		}
		return delivered == n
	})
}
