package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hostpublish"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
)

type memStore struct {
	mu  sync.Mutex
	kvs map[string][]byte
}

func (m *memStore) Put(_ context.Context, req *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kvs[req.Key] = req.Value
	return &hivemindv1.PutResponse{Applied: true}, nil
}

func (m *memStore) Delete(_ context.Context, req *hivemindv1.DeleteRequest) (*hivemindv1.DeleteResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.kvs, req.Key)
	return &hivemindv1.DeleteResponse{Deleted: 1}, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHarvestedChangesBecomeRecords(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "host.yaml")
	write := func(s string) {
		if err := os.WriteFile(path+".tmp", []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write("tags: [a]\nservices:\n  - name: web\n    port: 80\n")
	var addrMu sync.Mutex
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	st := &memStore{kvs: map[string][]byte{}}
	a, err := New(Options{
		Node: "h1", Loader: hostconfig.Loader{Path: path}, DataDir: dir,
		Publish: hostpublish.Options{Store: func() hostpublish.Store { return st }},
		Addrs: func() ([]netip.Addr, error) {
			addrMu.Lock()
			defer addrMu.Unlock()
			return slices.Clone(addrs), nil
		},
		AddressInterval: 10 * time.Millisecond, ConfigInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first record", func() bool { return a.Record() != nil })
	first := a.Record()
	if first.Node != "h1" || !slices.Equal(first.Addresses, []string{"10.0.0.1"}) || first.Services[0].Status != hivemindv1.HealthStatus_HEALTH_STATUS_PASSING {
		t.Fatalf("first record %v", first)
	}

	addrMu.Lock()
	addrs = []netip.Addr{netip.MustParseAddr("10.0.0.2")}
	addrMu.Unlock()
	waitFor(t, "the new address", func() bool { return slices.Equal(a.Record().Addresses, []string{"10.0.0.2"}) })
	second := a.Record()
	if second.Seq <= first.Seq || second.Hlc <= first.Hlc {
		t.Errorf("seq/hlc %d/%d after %d/%d", second.Seq, second.Hlc, first.Seq, first.Hlc)
	}

	write("tags: [a, b]\nservices:\n  - name: web\n    port: 80\npublish:\n  x: y\n")
	waitFor(t, "the new tag", func() bool { return slices.Equal(a.Record().Tags, []string{"a", "b"}) })
	waitFor(t, "the published entry", func() bool { st.mu.Lock(); defer st.mu.Unlock(); return string(st.kvs["/app/x"]) == "y" })

	// A node name that is not the agent's is refused; nothing changes.
	write("node: other\n")
	if _, _, err := a.Reload(); err == nil {
		t.Error("reload with another node name succeeded")
	}
	if !slices.Equal(a.Record().Tags, []string{"a", "b"}) {
		t.Errorf("a refused reload changed the record: %v", a.Record())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if last := a.Record(); !last.Gone || a.Written() != last.Seq {
		t.Errorf("after Stop: %v written %d, want gone and written", last, a.Written())
	}
}
