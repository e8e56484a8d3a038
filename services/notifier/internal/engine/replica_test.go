package engine_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cpclient"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/egress"
	"github.com/hivemind/hivemind/services/notifier/internal/engine"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
	"github.com/hivemind/hivemind/services/notifier/internal/webhook"
)

// The test binary doubles as a notifier replica process, so a test can
// SIGKILL one: TestMain runs a replica instead of the tests when
// replicaEnv is set.
const replicaEnv = "HIVEMIND_TEST_NOTIFIER_REPLICA"

func TestMain(m *testing.M) {
	if os.Getenv(replicaEnv) != "" {
		os.Exit(runReplica())
	}
	os.Exit(m.Run())
}

// replicaConfig is how a test describes a replica to its process.
type replicaConfig struct {
	Name      string
	Endpoints []string
	// SecretFile holds the cluster secret: a replica calls the control
	// plane as the notifier node Name (see clustertest.JoinAs).
	SecretFile string
	// KeyDir holds the node's key (clustertest.KeyDir).
	KeyDir string
	Lease  time.Duration
}

func runReplica() int {
	var rc replicaConfig
	rc.Name = os.Getenv(replicaEnv)
	rc.Endpoints = strings.Split(os.Getenv("REPLICA_ENDPOINTS"), ",")
	rc.SecretFile = os.Getenv("REPLICA_SECRET_FILE")
	rc.KeyDir = os.Getenv("REPLICA_KEY_DIR")
	rc.Lease, _ = time.ParseDuration(os.Getenv("REPLICA_LEASE"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", rc.Name)
	eng, err := newEngine(rc, log)
	if err != nil {
		log.Error("replica", "err", err)
		return 1
	}
	go func() {
		<-eng.Loaded()
		fmt.Println("loaded")
	}()
	if err := eng.Run(ctx); err != nil {
		log.Error("replica stopped", "err", err)
		return 1
	}
	return 0
}

func newEngine(rc replicaConfig, log *slog.Logger) (*engine.Engine, error) {
	sec, err := secret.Load("", rc.SecretFile)
	if err != nil {
		return nil, err
	}
	key, err := auth.LoadOrCreateNodeKey(rc.KeyDir)
	if err != nil {
		return nil, err
	}
	cp, err := cpclient.New(cpclient.Config{Endpoints: rc.Endpoints, Dial: grpcclient.Config{Auth: auth.NewNodeAuth(rc.Name, sec, key)}})
	if err != nil {
		return nil, err
	}
	comp, err := filter.NewCompiler(filter.Limits{Cost: 200})
	if err != nil {
		return nil, err
	}
	pol := delivery.TestPolicy()
	pol.MaxAge = time.Minute
	pol.MaxAttempts = 0
	return engine.New(engine.Config{
		Name: rc.Name, ControlPlane: cp, Compiler: comp, Lease: rc.Lease, Logger: log,
		Channels:       webhooks(webhook.New(webhook.Config{Retry: pol, Egress: egress.Policy{AllowLoopback: true}})),
		CursorInterval: 200 * time.Millisecond,
	})
}

// replicaProc is a replica running as a process of its own.
type replicaProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startReplica(t *testing.T, rc replicaConfig, logDir string) *replicaProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), replicaEnv+"="+rc.Name, "REPLICA_ENDPOINTS="+strings.Join(rc.Endpoints, ","),
		"REPLICA_SECRET_FILE="+rc.SecretFile, "REPLICA_KEY_DIR="+rc.KeyDir, "REPLICA_LEASE="+rc.Lease.String())
	logf, err := os.Create(filepath.Join(logDir, rc.Name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &replicaProc{cmd: cmd, exited: make(chan struct{})}
	loaded := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "loaded" {
				close(loaded)
			}
		}
		_ = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(logDir, rc.Name+".log"))
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("--- last lines of %s ---\n%s", rc.Name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})
	select {
	case <-loaded:
	case <-p.exited:
		t.Fatalf("replica %s exited before it loaded", rc.Name)
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s did not load within 30s", rc.Name)
	}
	return p
}

func (p *replicaProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}
