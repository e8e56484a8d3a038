package daemon

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

const testSecret = "0123456789abcdef-test-secret"

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func testRole(started chan<- *Env, stopped *bool) Role {
	return Role{
		Name: "test", Command: "hivemind-test", Synopsis: "A role for tests.",
		DefaultGRPCAddr: "127.0.0.1:0", DefaultMetricsAddr: "127.0.0.1:0",
		Start: func(ctx context.Context, env *Env) (func(context.Context) error, error) {
			env.Server.SetServing(true)
			started <- env
			return func(context.Context) error { *stopped = true; return nil }, nil
		},
	}
}

func TestRunServesInfoHealthReflectionMetrics(t *testing.T) {
	started := make(chan *Env, 1)
	var stopped bool
	logs := &syncBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	dataDir := t.TempDir()
	go func() {
		exit <- Run(ctx, testRole(started, &stopped), []string{"--node-name", "n1", "--log-format", "json", "--cluster-secret", testSecret, "--data-dir", dataDir}, logs)
	}()
	var env *Env
	select {
	case env = <-started:
	case code := <-exit:
		t.Fatalf("exited with %d: %s", code, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("role did not start")
	}
	addr := env.Server.Addr()

	// Env.Client is how a node dials another: it authenticates with the
	// cluster secret.
	if env.Client.Auth == nil || !env.Secret.Valid() || env.Auth == nil {
		t.Fatalf("env lacks security: %+v", env)
	}
	// with its key from the data directory, bound in the registry (here a
	// fixed one; a role plugs in the cluster's).
	if _, err := os.Stat(filepath.Join(dataDir, auth.NodeKeyFile)); err != nil {
		t.Fatalf("node key not kept in the data directory: %v", err)
	}
	env.Members.Set(auth.StaticMembers{"n1": {PublicKey: env.NodeKey.Public()}})
	conn, err := grpcclient.Dial(addr, env.Client)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()

	info, err := hivemindv1.NewNodeClient(conn).Info(cctx, &hivemindv1.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Role != "test" || info.NodeName != "n1" || info.Build.GetGoVersion() == "" || info.Uptime == nil {
		t.Fatalf("unexpected info: %v", info)
	}

	// Reflection lists the Node and health services, as grpcurl list does.
	rctx, rcancel := context.WithCancel(cctx)
	defer rcancel()
	rc, err := grpc_reflection_v1.NewServerReflectionClient(conn).ServerReflectionInfo(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&grpc_reflection_v1.ServerReflectionRequest{MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	lr, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	rcancel()
	var names []string
	for _, s := range lr.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"hivemind.v1.Node", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}

	// The healthcheck subcommand finds the server through the same flag.
	if code := Run(cctx, testRole(nil, nil), []string{"healthcheck", "--grpc-addr", addr}, io.Discard); code != 0 {
		t.Errorf("healthcheck exit %d, want 0", code)
	}

	resp, err := http.Get("http://" + env.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `grpc_server_handled_total{grpc_code="OK",grpc_method="Info",grpc_service="hivemind.v1.Node",grpc_type="unary"} 1`) {
		t.Errorf("metrics lack the Info call:\n%s", body)
	}
	if n := strings.Count(logs.String(), `"grpc.method":"Info"`); n != 1 {
		t.Errorf("%d log lines for Info, want 1", n)
	}

	// A stream open at the stop (here a health watch) ends with
	// UNAVAILABLE, so its client resumes elsewhere, and does not hold the
	// stop for the shutdown timeout (10s).
	watch, err := healthpb.NewHealthClient(conn).Watch(cctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	watchEnd := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				watchEnd <- err
				return
			}
		}
	}()
	stopAt := time.Now()
	cancel()
	select {
	case code := <-exit:
		if code != 0 || !stopped {
			t.Fatalf("exit %d, role stopped %v", code, stopped)
		}
		if took := time.Since(stopAt); took > 5*time.Second {
			t.Fatalf("stop with a watch open took %v", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not stop")
	}
	if err := <-watchEnd; status.Code(err) != codes.Unavailable {
		t.Fatalf("open watch ended with %v, want UNAVAILABLE", err)
	}
	// Stopped: the healthcheck now fails.
	if code := Run(context.Background(), testRole(nil, nil), []string{"healthcheck", "--grpc-addr", addr, "--timeout", "500ms"}, io.Discard); code == 0 {
		t.Error("healthcheck passed against a stopped server")
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if code := Run(context.Background(), testRole(nil, nil), []string{"--help"}, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, f := range []string{"node-name", "grpc-addr", "advertise-addr", "metrics-addr", "data-dir", "log-format", "log-level", "shutdown-timeout",
		"cluster-secret", "cluster-secret-file", "api-tokens", "api-tokens-file", "tls-cert", "tls-key", "tls-ca"} {
		if !strings.Contains(out.String(), "--"+f) || !strings.Contains(out.String(), "HIVEMIND_"+strings.ToUpper(strings.ReplaceAll(f, "-", "_"))) {
			t.Errorf("help lacks --%s or its variable", f)
		}
	}
	if !strings.Contains(out.String(), "healthcheck") {
		t.Error("help does not mention the healthcheck subcommand")
	}
}

func TestBadFlagValueFails(t *testing.T) {
	var out bytes.Buffer
	if code := Run(context.Background(), testRole(nil, nil), []string{"--log-level", "loud", "--cluster-secret", testSecret}, &out); code == 0 {
		t.Fatal("bad log level accepted")
	}
	if !strings.Contains(out.String(), "log level") {
		t.Errorf("error does not name the flag: %s", out.String())
	}
}
