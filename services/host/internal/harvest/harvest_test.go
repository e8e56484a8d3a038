package harvest

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/hivemind/services/host/internal/clock"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
)

const wait = 10 * time.Second

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestSelectAddrs(t *testing.T) {
	for _, tc := range []struct {
		all  []netip.Addr
		loop bool
		want []netip.Addr
	}{
		{addrs("127.0.0.1", "10.0.0.2", "fe80::1", "::1", "192.168.1.5", "fd00::1", "10.0.0.2", "224.0.0.1"), false,
			addrs("10.0.0.2", "192.168.1.5", "fd00::1")},
		{addrs("127.0.0.1", "10.0.0.2", "::1"), true, addrs("10.0.0.2", "127.0.0.1", "::1")},
		{addrs("127.0.0.1", "::1", "fe80::1", "169.254.3.4"), false, addrs("127.0.0.1", "::1")}, // nothing else
		{addrs("::ffff:10.1.1.1"), false, addrs("10.1.1.1")},
		{nil, false, nil},
	} {
		if got := SelectAddrs(tc.all, tc.loop); !slices.Equal(got, tc.want) {
			t.Errorf("SelectAddrs(%v, %v) = %v, want %v", tc.all, tc.loop, got, tc.want)
		}
	}
}

func TestHostAddrs(t *testing.T) {
	src := func() ([]netip.Addr, error) { return addrs("127.0.0.1", "10.9.9.9"), nil }
	got, err := HostAddrs(&hostconfig.Config{Addresses: []string{"192.0.2.1"}}, src)
	if err != nil || !slices.Equal(got, addrs("192.0.2.1")) {
		t.Errorf("configured: %v %v", got, err)
	}
	got, err = HostAddrs(&hostconfig.Config{}, src)
	if err != nil || !slices.Equal(got, addrs("10.9.9.9")) {
		t.Errorf("detected: %v %v", got, err)
	}
	// The real machine has at least a loopback interface that is up.
	got, err = HostAddrs(&hostconfig.Config{}, nil)
	if err != nil || len(got) == 0 {
		t.Errorf("system: %v %v", got, err)
	}
}

type addrEvent struct {
	old, new []netip.Addr
	err      error
}

func TestAddressWatcher(t *testing.T) {
	var mu sync.Mutex
	cur, fail := addrs("10.0.0.1"), error(nil)
	set := func(a []netip.Addr, err error) {
		mu.Lock()
		defer mu.Unlock()
		cur, fail = a, err
	}
	events := make(chan addrEvent, 10)
	fc := clock.NewFake(time.Unix(0, 0))
	w := &AddressWatcher{
		Source: func() ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(cur), fail
		},
		Interval: time.Second,
		Clock:    fc,
		OnChange: func(old, new []netip.Addr) { events <- addrEvent{old: old, new: new} },
		OnError:  func(err error) { events <- addrEvent{err: err} },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx, addrs("10.0.0.1")) }()

	tick := func() {
		t.Helper()
		if !fc.WaitPending(1, wait) {
			t.Fatal("watcher not waiting")
		}
		fc.Advance(time.Second)
	}
	next := func() addrEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(wait):
			t.Fatal("no event")
			return addrEvent{}
		}
	}

	tick() // unchanged: nothing
	set(addrs("10.0.0.2", "127.0.0.1"), nil)
	tick()
	if e := next(); !slices.Equal(e.old, addrs("10.0.0.1")) || !slices.Equal(e.new, addrs("10.0.0.2")) {
		t.Fatalf("change: %+v", e)
	}
	set(nil, errors.New("netlink down"))
	tick()
	tick() // the same failure is told once
	if e := next(); e.err == nil {
		t.Fatalf("want error, got %+v", e)
	}
	set(addrs("10.0.0.3"), nil)
	tick()
	if e := next(); e.err != nil || !slices.Equal(e.new, addrs("10.0.0.3")) {
		t.Fatalf("after recovery: %+v", e)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
	select {
	case e := <-events:
		t.Errorf("extra event %+v", e)
	default:
	}
}

// writeFile replaces path atomically, as editors and config managers do.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type cfgEvent struct {
	old, new *hostconfig.Config
	err      error
}

func TestConfigWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.yaml")
	writeFile(t, path, "node: a\ntags: [one]\n")
	loader := hostconfig.Loader{Path: path, Override: func(c *hostconfig.Config) { c.Meta = map[string]string{"flag": "wins"} }}
	cfg, data, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan cfgEvent, 10)
	fc := clock.NewFake(time.Unix(0, 0))
	w := NewConfigWatcher(loader, cfg, data, ConfigWatcherOptions{
		Interval: time.Second,
		Clock:    fc,
		OnChange: func(old, new *hostconfig.Config) { events <- cfgEvent{old: old, new: new} },
		OnError:  func(err error) { events <- cfgEvent{err: err} },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	tick := func() {
		t.Helper()
		if !fc.WaitPending(1, wait) {
			t.Fatal("watcher not waiting")
		}
		fc.Advance(time.Second)
		// The poll is done when the watcher waits again.
		if !fc.WaitPending(1, wait) {
			t.Fatal("watcher stuck in a poll")
		}
	}
	next := func() cfgEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(wait):
			t.Fatal("no event")
			return cfgEvent{}
		}
	}
	quiet := func() {
		t.Helper()
		select {
		case e := <-events:
			t.Fatalf("unexpected event %+v", e)
		default:
		}
	}

	tick()
	quiet()
	writeFile(t, path, "node: a\ntags: [two]\n")
	tick()
	if e := next(); e.old.Tags[0] != "one" || e.new.Tags[0] != "two" || e.new.Meta["flag"] != "wins" {
		t.Fatalf("change: %+v %+v", e.old, e.new)
	}
	writeFile(t, path, "node: a\n# a comment changes nothing\ntags: [two]\n")
	tick()
	quiet()

	// A bad file is reported once and leaves the old configuration active.
	writeFile(t, path, "node: -bad-\ntags: [two]\n")
	tick()
	if e := next(); e.err == nil || !strings.Contains(e.err.Error(), "node:") {
		t.Fatalf("bad file: %+v", e)
	}
	writeFile(t, path, "node: -bad-\ntags: [two]\n")
	tick()
	quiet()
	if w.Current().Node != "a" || w.Current().Tags[0] != "two" {
		t.Fatalf("bad file replaced the config: %+v", w.Current())
	}
	if _, changed, err := w.Reload(); err == nil || changed {
		t.Errorf("Reload of a bad file: changed %v, err %v", changed, err)
	}

	os.Remove(path)
	tick()
	if e := next(); !errors.Is(e.err, os.ErrNotExist) {
		t.Fatalf("missing file: %+v", e)
	}
	tick()
	quiet()

	writeFile(t, path, "node: b\n")
	tick()
	if e := next(); e.err != nil || e.new.Node != "b" || e.old.Node != "a" {
		t.Fatalf("fixed file: %+v", e)
	}

	// Reload applies a change at once and reports it through OnChange too.
	writeFile(t, path, "node: c\n")
	got, changed, err := w.Reload()
	if err != nil || !changed || got.Node != "c" {
		t.Fatalf("Reload: %+v %v %v", got, changed, err)
	}
	if e := next(); e.new.Node != "c" {
		t.Fatalf("Reload event: %+v", e)
	}
	tick() // the poll sees the content Reload loaded
	quiet()
}
