package check

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func probe(t *testing.T, d Definition, timeout time.Duration) Result {
	t.Helper()
	c, err := NewChecker(d, nil, 0)
	if err != nil {
		t.Fatalf("NewChecker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Check(ctx)
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if r := probe(t, Definition{Kind: KindTCP, TCP: addr}, 5*time.Second); r.Status != Passing {
		t.Fatalf("listening: %v %q", r.Status, r.Output)
	}
	ln.Close()
	if r := probe(t, Definition{Kind: KindTCP, TCP: addr}, 5*time.Second); r.Status != Critical || !strings.Contains(r.Output, addr) {
		t.Fatalf("closed: %v %q", r.Status, r.Output)
	}
}

func TestHTTP(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("all good"))
		case "/busy":
			w.WriteHeader(http.StatusTooManyRequests)
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
		case "/echo":
			w.Write([]byte(r.Method + " " + r.Header.Get("X-Probe") + " " + r.Header.Get("User-Agent")))
		case "/big":
			w.Write([]byte(strings.Repeat("x", 10000)))
		case "/hang":
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}
	}))
	defer srv.Close()

	for _, tc := range []struct {
		path string
		want Status
	}{{"/ok", Passing}, {"/busy", Warning}, {"/fail", Critical}} {
		r := probe(t, Definition{Kind: KindHTTP, HTTP: srv.URL + tc.path}, 5*time.Second)
		if r.Status != tc.want {
			t.Errorf("%s: %v (%q), want %v", tc.path, r.Status, r.Output, tc.want)
		}
	}
	if r := probe(t, Definition{Kind: KindHTTP, HTTP: srv.URL + "/ok"}, 5*time.Second); !strings.Contains(r.Output, "200 OK Output: all good") {
		t.Errorf("output %q", r.Output)
	}

	r := probe(t, Definition{Kind: KindHTTP, HTTP: srv.URL + "/echo", Method: "POST",
		Header: http.Header{"X-Probe": {"yes"}}}, 5*time.Second)
	if r.Status != Passing || !strings.Contains(r.Output, "POST yes "+userAgent) {
		t.Errorf("custom method and header: %v %q", r.Status, r.Output)
	}

	r = probe(t, Definition{Kind: KindHTTP, HTTP: srv.URL + "/big"}, 5*time.Second)
	if len(r.Output) > DefaultMaxOutput || !strings.HasSuffix(r.Output, truncationMark) {
		t.Errorf("big body: %d bytes, ends %q", len(r.Output), r.Output[max(0, len(r.Output)-20):])
	}

	start := time.Now()
	r = probe(t, Definition{Kind: KindHTTP, HTTP: srv.URL + "/hang"}, 200*time.Millisecond)
	if r.Status != Critical || !strings.Contains(r.Output, "timed out") {
		t.Errorf("hanging server: %v %q", r.Status, r.Output)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("timeout took %v", el)
	}

	srv.Close()
	if r := probe(t, Definition{Kind: KindHTTP, HTTP: srv.URL + "/ok"}, 5*time.Second); r.Status != Critical {
		t.Errorf("server gone: %v %q", r.Status, r.Output)
	}
}

func TestGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()
	addr := ln.Addr().String()

	for _, tc := range []struct {
		service string
		want    Status
	}{{"", Passing}, {"up", Passing}, {"down", Critical}, {"nosuch", Critical}} {
		r := probe(t, Definition{Kind: KindGRPC, GRPC: addr, GRPCService: tc.service}, 5*time.Second)
		if r.Status != tc.want {
			t.Errorf("service %q: %v (%q), want %v", tc.service, r.Status, r.Output, tc.want)
		}
	}
	srv.Stop()
	if r := probe(t, Definition{Kind: KindGRPC, GRPC: addr}, 5*time.Second); r.Status != Critical {
		t.Errorf("server gone: %v %q", r.Status, r.Output)
	}
}

func TestExec(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   Status
		out    string
	}{
		{"echo fine", Passing, "fine\n"},
		{"echo slow >&2; exit 1", Warning, "slow\n"},
		{"exit 2", Critical, ""},
	} {
		r := probe(t, Definition{Kind: KindExec, Args: []string{"/bin/sh", "-c", tc.script}}, 10*time.Second)
		if r.Status != tc.want || r.Output != tc.out {
			t.Errorf("%q: %v %q, want %v %q", tc.script, r.Status, r.Output, tc.want, tc.out)
		}
	}

	r := probe(t, Definition{Kind: KindExec, Args: []string{"/bin/sh", "-c", "head -c 10000 /dev/zero | tr '\\0' a; echo END"}}, 10*time.Second)
	if r.Status != Passing || len(r.Output) > DefaultMaxOutput || !strings.HasSuffix(r.Output, "aaaEND\n") || !strings.HasPrefix(r.Output, "(truncated)") {
		t.Errorf("long output: %v, %d bytes, %q…", r.Status, len(r.Output), r.Output[:min(30, len(r.Output))])
	}

	// The kill reaches the shell's children too: the background sleep is
	// gone soon after the check returns.
	start := time.Now()
	r = probe(t, Definition{Kind: KindExec, Args: []string{"/bin/sh", "-c", "sleep 30 & echo $!; wait"}}, 300*time.Millisecond)
	if r.Status != Critical || !strings.Contains(r.Output, "timed out") {
		t.Errorf("timeout: %v %q", r.Status, r.Output)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("killed after %v", el)
	}
	lines := strings.Split(strings.TrimSpace(r.Output), "\n")
	pid, err := strconv.Atoi(lines[len(lines)-1])
	if err != nil {
		t.Fatalf("no child pid in %q", r.Output)
	}
	deadline := time.Now().Add(wait)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still running after the check timed out", pid)
		}
		<-time.After(10 * time.Millisecond) // polling a process table has no event to wait on
	}

	r = probe(t, Definition{Kind: KindExec, Args: []string{"/nonexistent/check"}}, 5*time.Second)
	if r.Status != Critical || !strings.Contains(r.Output, "/nonexistent/check") {
		t.Errorf("missing program: %v %q", r.Status, r.Output)
	}
}

func TestTruncate(t *testing.T) {
	if got := truncate("short", 100); got != "short" {
		t.Errorf("short: %q", got)
	}
	long := strings.Repeat("é", 100) // two bytes each
	got := truncate(long, 51)
	if len(got) > 51 || !strings.HasSuffix(got, truncationMark) || !strings.HasPrefix(got, "é") {
		t.Errorf("truncate: %d bytes %q", len(got), got)
	}
	for _, r := range strings.TrimSuffix(got, truncationMark) {
		if r != 'é' {
			t.Fatalf("cut inside a rune: %q", got)
		}
	}
}

func TestStatusParse(t *testing.T) {
	for _, s := range []Status{Passing, Warning, Critical} {
		got, err := ParseStatus(strings.ToUpper(s.String()))
		if err != nil || got != s {
			t.Errorf("%v: %v %v", s, got, err)
		}
	}
	if _, err := ParseStatus("maintenance"); err == nil {
		t.Error("unknown status parsed")
	}
	if Worst(Passing, Warning) != Warning || Worst(Critical, Warning) != Critical {
		t.Error("Worst")
	}
}
