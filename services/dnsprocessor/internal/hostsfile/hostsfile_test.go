package hostsfile

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/processor"
)

func apply(t *testing.T, s *hoststate.State, u hoststate.Update) {
	t.Helper()
	if _, err := s.Apply(u); err != nil {
		t.Fatal(err)
	}
}

func host(addrs ...string) *hoststate.Host {
	h := &hoststate.Host{}
	for _, a := range addrs {
		h.Addrs = append(h.Addrs, netip.MustParseAddr(a))
	}
	return h
}

const header = "# Written by hivemind-dns; do not edit: it is replaced on every change.\n"

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func TestWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	w, err := New(Config{Path: path, Origin: "Hive."})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := hoststate.New()
	apply(t, s, hoststate.Update{Op: hoststate.Put, Host: "web2", Seq: 1, Record: host("10.0.0.2")})
	apply(t, s, hoststate.Update{Op: hoststate.Put, Host: "web1", Seq: 1, Record: host("10.0.0.1", "::ffff:10.0.0.11", "2001:db8::1")})
	apply(t, s, hoststate.Update{Op: hoststate.Put, Host: "down", Seq: 1, Record: host("10.0.0.9")})
	apply(t, s, hoststate.Update{Op: hoststate.Put, Host: "bad_name", Seq: 1, Record: host("10.0.0.8")})
	apply(t, s, hoststate.Update{Op: hoststate.Failed, Host: "down", Time: 1})
	if err := w.Update(ctx, s.Snapshot()); err != nil {
		t.Fatal(err)
	}
	want := header +
		"10.0.0.1\tweb1.node.hive web1\n" +
		"10.0.0.11\tweb1.node.hive web1\n" +
		"2001:db8::1\tweb1.node.hive web1\n" +
		"10.0.0.2\tweb2.node.hive web2\n"
	if got := read(t, path); got != want {
		t.Errorf("file:\n%s\nwant:\n%s", got, want)
	}
	if mode := stat(t, path).Mode().Perm(); mode != 0o644 {
		t.Errorf("mode %v", mode)
	}

	// A snapshot that lists the same does not touch the file.
	before := stat(t, path)
	apply(t, s, hoststate.Update{Op: hoststate.Put, Host: "web2", Seq: 2, Record: host("10.0.0.2")})
	if err := w.Update(ctx, s.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, stat(t, path)) {
		t.Error("file replaced without a change")
	}

	// A change replaces it whole (a new file renamed over the old one).
	apply(t, s, hoststate.Update{Op: hoststate.Delete, Host: "web1", Seq: 2})
	if err := w.Update(ctx, s.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, stat(t, path)) {
		t.Error("file changed in place, not replaced")
	}
	if got, want := read(t, path), header+"10.0.0.2\tweb2.node.hive web2\n"; got != want {
		t.Errorf("file:\n%s\nwant:\n%s", got, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}

	// A new writer (a restart) with the same hosts leaves the file alone.
	again, _ := New(Config{Path: path})
	before = stat(t, path)
	if err := again.Update(ctx, s.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, stat(t, path)) {
		t.Error("restart rewrote an unchanged file")
	}
}

func TestWriterFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	w, _ := New(Config{Path: filepath.Join(dir, "missing", "hosts")})
	if err := w.Update(context.Background(), hoststate.New().Snapshot()); err == nil {
		t.Fatal("no error writing into a missing directory")
	}
	if _, err := New(Config{}); err == nil {
		t.Error("no error without a path")
	}
}

// TestWriterAsProcessor runs the writer the way the dns processor does:
// state changes reach the file without anyone calling Update by hand, and
// a failed write is retried.
func TestWriterAsProcessor(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "hosts")
	w, _ := New(Config{Path: path})
	s := hoststate.New()
	apply(t, s, hoststate.Update{Op: hoststate.Put, Host: "a", Seq: 1, Record: host("10.0.0.1")})

	ctx, cancel := context.WithCancel(context.Background())
	failed := make(chan struct{}, 100)
	done := make(chan error)
	go func() {
		done <- processor.Run(ctx, s, w, processor.Options{
			MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
			OnError: func(error) { failed <- struct{}{} },
		})
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()

	<-failed // the directory is missing
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, path, header+"10.0.0.1\ta.node.hive a\n")
	apply(t, s, hoststate.Update{Op: hoststate.Put, Host: "a", Seq: 2, Record: host("10.0.0.2")})
	waitFor(t, path, header+"10.0.0.2\ta.node.hive a\n")
}

func waitFor(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil && string(b) == want {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(path)
			t.Fatalf("file is %q, want %q", b, want)
		}
		<-tick.C
	}
}
