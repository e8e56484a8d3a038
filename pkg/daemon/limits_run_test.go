package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/audit"
	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// A node with its default request limit and a small rate limit, seen by
// callers without a token, with a read-only token and with an admin one.
func TestLimitsBeforeAnythingIsRead(t *testing.T) {
	ro, ops := auth.GenerateAPIToken(), auth.GenerateAPIToken()
	started := make(chan *Env, 1)
	var stopped bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	logs := &syncBuf{}
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	go func() {
		exit <- Run(ctx, testRole(started, &stopped), []string{"--node-name", "n1", "--cluster-secret", testSecret,
			"--api-tokens", "ro=" + ro + ":read;ops=" + ops + ":read,write,admin", "--rate-limit", "1", "--rate-burst", "3",
			"--audit-log", auditFile}, logs)
	}()
	var env *Env
	select {
	case env = <-started:
	case code := <-exit:
		t.Fatalf("exited with %d: %s", code, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("role did not start")
	}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	call := func(token string, req *hivemindv1.PutRequest) error {
		cfg := grpcclient.Config{MaxRetries: -1}
		if token != "" {
			cfg.Auth = auth.BearerToken(token)
		}
		conn, err := grpcclient.Dial(env.Server.Addr(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Node/Info decodes the Put as an InfoRequest with unknown fields.
		return conn.Invoke(cctx, "/hivemind.v1.Node/Info", req, &hivemindv1.InfoResponse{}, grpc.MaxCallSendMsgSize(1<<30))
	}
	big := func(n int) *hivemindv1.PutRequest { return &hivemindv1.PutRequest{Value: make([]byte, n)} }

	// Without a token, 48 MiB: refused for the token, not for the size —
	// the server did not read the message to find out how large it is.
	if err := call("", big(48<<20)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("48 MiB without a token: %v, want UNAUTHENTICATED", err)
	}
	// With a token, 5 MiB is over the 4 MiB request limit.
	if err := call(ops, big(5<<20)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("5 MiB with a token: %v, want RESOURCE_EXHAUSTED", err)
	}

	// The read-only operator has a burst of 3 calls, then waits about a
	// second; the admin operator is not limited.
	for i := range 3 {
		if err := call(ro, big(0)); err != nil {
			t.Fatalf("ro call %d: %v", i, err)
		}
	}
	err := call(ro, big(0))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "operator ro may start 1 calls per second (burst 3)") {
		t.Fatalf("ro over its rate: %v", err)
	}
	found := false
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok && r.GetRetryDelay().AsDuration() > 0 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no RetryInfo in %v", st.Details())
	}
	for i := range 10 {
		if err := call(ops, big(0)); err != nil {
			t.Fatalf("admin call %d: %v", i, err)
		}
	}

	resp, err := http.Get("http://" + env.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`grpc_server_refused_total{grpc_code="Unauthenticated"} 1`, `grpc_server_refused_total{grpc_code="ResourceExhausted"} 1`,
		`grpc_server_refusals_total{grpc_code="Unauthenticated",grpc_method="/hivemind.v1.Node/Info"} 1`,
		`grpc_server_refusals_total{grpc_code="ResourceExhausted",grpc_method="/hivemind.v1.Node/Info"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// The audit log has the two refusals for who called, each with its
	// caller, and none of the 13 reads that went through (Node/Info is not
	// audited); no token appears in it. The 5 MiB message is refused by
	// gRPC while decoding it, before any interceptor: it is in the call
	// log, not the audit log.
	b, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if r.Member != "n1" || r.Method != "/hivemind.v1.Node/Info" || !r.Refused {
			t.Errorf("audit record %s", l)
		}
		got = append(got, r.Caller+" "+r.Code)
	}
	want := []string{"anonymous Unauthenticated", "operator:ro ResourceExhausted"}
	if !slices.Equal(got, want) {
		t.Errorf("audit records %q, want %q", got, want)
	}
	if strings.Contains(string(b), ro) || strings.Contains(string(b), ops) {
		t.Errorf("a token is in the audit log:\n%s", b)
	}
}
