package engine_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/clustertest"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/egress"
	"github.com/hivemind/hivemind/services/notifier/internal/engine"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
	"github.com/hivemind/hivemind/services/notifier/internal/webhook"
)

// errClosing is what a closed gRPC client answers.
var errClosing = status.Error(codes.Canceled, "grpc: the client connection is closing")

// flakyCP is a control-plane client that can be broken like a closed
// connection (watches end, reads fail) and whose next watches can be made
// to fail.
type flakyCP struct {
	engine.ControlPlane
	failWatches atomic.Int32

	mu     sync.Mutex
	broken bool
	cut    chan struct{} // closed when broken
}

func newFlaky(cp engine.ControlPlane) *flakyCP {
	return &flakyCP{ControlPlane: cp, cut: make(chan struct{})}
}

func (f *flakyCP) setBroken(b bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b == f.broken {
		return
	}
	f.broken = b
	if b {
		close(f.cut)
	} else {
		f.cut = make(chan struct{})
	}
}

func (f *flakyCP) state() (bool, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.broken, f.cut
}

func (f *flakyCP) Get(ctx context.Context, r *hivemindv1.GetRequest) (*hivemindv1.GetResponse, error) {
	if b, _ := f.state(); b {
		return nil, errClosing
	}
	return f.ControlPlane.Get(ctx, r)
}

func (f *flakyCP) Watch(ctx context.Context, r *hivemindv1.WatchRequest, fn func(*hivemindv1.WatchResponse) error) error {
	b, cut := f.state()
	if b || f.failWatches.Add(-1) >= 0 {
		return errClosing
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	go func() {
		select {
		case <-cut:
			cancel()
		case <-wctx.Done():
		}
	}()
	err := f.ControlPlane.Watch(wctx, r, fn)
	if ctx.Err() == nil && wctx.Err() != nil {
		return errClosing
	}
	return err
}

// TestSupervisor checks that deliveries go on when the engine's watch
// fails (the engine is started again, with backoff), when the node's
// client is replaced and the old one closed (the engine follows the new
// one), and that the supervisor reports not delivering while its only
// client is broken, and delivering again once it works.
func TestSupervisor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := clustertest.Start(t, clustertest.Options{})
	cp := c.ControlPlane()
	rcv := newReceiver(t, testSecret)
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Only notifier nodes write /notifier/: the engine runs as one, and
	// the subscription is stored as it, as the Notifier API would.
	na := c.JoinAs("notifier1", auth.RoleNotifier)
	if _, err := subscription.NewStore(c.ControlPlaneAs("notifier1")).Create(ctx, &hivemindv1.Subscription{Name: "sup", Target: srv.URL, Prefix: "/app/sup/", Secret: testSecret}); err != nil {
		t.Fatal(err)
	}

	newClient := func() *flakyCP {
		cl, err := cpclient.New(cpclient.Config{Endpoints: c.ControlPlaneAddrs(), Dial: grpcclient.Config{Auth: na}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return newFlaky(cl)
	}
	a, b := newClient(), newClient()
	a.failWatches.Store(2)
	var current atomic.Pointer[flakyCP]
	current.Store(a)

	comp, err := filter.NewCompiler(filter.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	var delivering atomic.Bool
	var stops atomic.Int32
	sup := engine.NewSupervisor(engine.SupervisorConfig{
		Engine: engine.Config{
			Name: "notifier1", Compiler: comp, Lease: 2 * time.Second, CursorInterval: 100 * time.Millisecond,
			Channels: webhooks(webhook.New(webhook.Config{Retry: delivery.TestPolicy(), Egress: egress.Policy{AllowLoopback: true}})),
			Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		},
		ControlPlane: func() engine.ControlPlane { return current.Load() },
		OnState: func(d bool, _ string) {
			if !d && delivering.Load() {
				stops.Add(1)
			}
			delivering.Store(d)
		},
		Poll: 50 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- sup.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-stopped })

	put := func(key string) {
		t.Helper()
		if _, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: key, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	received := func(n int) func(context.Context) bool {
		return func(context.Context) bool { got, _, _ := rcv.counts(); return got >= n }
	}
	isDelivering := func(context.Context) bool { return delivering.Load() }

	// Two failed watches: the engine stops twice and is started again.
	c.WaitFor("an engine delivering after two failed watches", 30*time.Second, func(context.Context) bool {
		return a.failWatches.Load() < 0 && delivering.Load()
	})
	if stops.Load() < 2 {
		t.Errorf("the supervisor reported %d stops, want at least 2 (one per failed watch)", stops.Load())
	}
	put("/app/sup/1")
	c.WaitFor("the first event delivered", 30*time.Second, received(1))

	// The node joined again: a new client, the old one closed.
	current.Store(b)
	a.setBroken(true)
	put("/app/sup/2")
	c.WaitFor("the second event delivered through the new client", 30*time.Second, received(2))
	c.WaitFor("delivering on the new client", 10*time.Second, isDelivering)

	// The only client broken: not delivering, then delivering again.
	b.setBroken(true)
	c.WaitFor("not delivering while the client is broken", 10*time.Second, func(context.Context) bool { return !delivering.Load() })
	put("/app/sup/3")
	b.setBroken(false)
	c.WaitFor("delivering again", 30*time.Second, isDelivering)
	c.WaitFor("the third event delivered after the repair", 30*time.Second, received(3))

	if got, repeats, bad := rcv.counts(); got != 3 || bad != 0 {
		t.Errorf("receiver: %d events, %d repeats, %d bad; want 3 events, 0 bad", got, repeats, bad)
	}
}
