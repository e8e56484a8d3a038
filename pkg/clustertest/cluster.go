// Package clustertest runs a real hivemind cluster for tests: the role
// binaries, built from this workspace, started as processes on loopback
// with their own ports, data directories and logs. Tests kill, stop and
// restart nodes like an operator would, and talk to them over gRPC with
// the operator token or as a node.
//
// It is for tests that cross roles (a notifier and the control plane, a
// host and the dns processors); a role's own integration tests start its
// parts in-process.
package clustertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cpclient"
	"github.com/hivemind/hivemind/pkg/devca"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
)

// Binaries, by role.
var binaries = map[string]struct{ module, bin string }{
	"controlplane": {"services/controlplane", "hivemind-controlplane"},
	"host":         {"services/host", "hivemind-host"},
	"dns":          {"services/dnsprocessor", "hivemind-dns"},
	"notifier":     {"services/notifier", "hivemind-notifier"},
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// build compiles every role binary once per test process.
func build() (string, error) {
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOWORK").Output()
		if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == "off" {
			buildErr = fmt.Errorf("clustertest: no go.work found (go env GOWORK: %q, %v)", out, err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		binDir, buildErr = os.MkdirTemp("", "hivemind-clustertest-")
		if buildErr != nil {
			return
		}
		for _, b := range binaries {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.bin), "./cmd/"+b.bin)
			cmd.Dir = filepath.Join(root, b.module)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("clustertest: build %s: %v\n%s", b.bin, err, out)
				return
			}
		}
	})
	return binDir, buildErr
}

// Node is one process of the cluster.
type Node struct {
	Name string
	Role string
	// GRPC and Gossip are the node's addresses.
	GRPC   string
	Gossip string
	Dir    string
	args   []string
	cmd    *exec.Cmd
	exited chan struct{}
}

// Cluster is a running set of processes.
type Cluster struct {
	t      testing.TB
	bin    string
	Secret secret.Secret
	// Token is an operator token with every scope.
	Token string
	dir   string
	Nodes map[string]*Node
	order []string
	mu    sync.Mutex

	keysMu sync.Mutex // one creation of a node key at a time

	// caFile and tls are set with Options.TLS.
	caFile string
	tls    credentials.TransportCredentials
}

// Options configures a cluster.
type Options struct {
	// ControlPlanes is the number of control-plane nodes; default 3.
	ControlPlanes int
	// ExtraArgs are added to every node's command line.
	ExtraArgs []string
	// TLS makes a dev CA (package devca) and runs every node with TLS and
	// no pre-made certificate: control-plane members hold the CA key and
	// issue their own certificate and every other node's; the other nodes
	// start with only the CA certificate. The test's clients verify servers
	// against the CA and present no certificate.
	TLS bool
}

// Start builds the binaries (once), starts the control plane and waits
// until it is healthy. Everything stops when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.ControlPlanes == 0 {
		opts.ControlPlanes = 3
	}
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 24)
	_, _ = rand.Read(raw)
	sec, err := secret.New([]byte(hex.EncodeToString(raw)))
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, bin: bin, Secret: sec, Token: "hmo_" + hex.EncodeToString(raw[:16]), dir: t.TempDir(), Nodes: map[string]*Node{}}
	if err := os.WriteFile(filepath.Join(c.dir, "secret"), []byte(hex.EncodeToString(raw)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "tokens"), []byte("ops="+c.Token+":read,write,admin,filter\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if opts.TLS {
		caDir := filepath.Join(c.dir, "ca")
		if err := devca.WriteDir(caDir, nil); err != nil {
			t.Fatal(err)
		}
		c.caFile = filepath.Join(caDir, "ca.pem")
		if c.tls, err = tlsconfig.Client(tlsconfig.Files{CA: c.caFile}); err != nil {
			t.Fatal(err)
		}
	}
	var initial []string
	var cps []*Node
	for i := 1; i <= opts.ControlPlanes; i++ {
		n := c.newNode(fmt.Sprintf("cp%d", i), "controlplane")
		initial = append(initial, n.Name+"="+n.GRPC)
		cps = append(cps, n)
	}
	for _, n := range cps {
		n.args = append(append(n.args, "--initial-cluster", strings.Join(initial, ","), "--tick-interval", "50ms"), opts.ExtraArgs...)
		c.run(n)
	}
	t.Cleanup(c.stopAll)
	for _, n := range cps {
		c.WaitHealthy(n.Name, 30*time.Second)
	}
	return c
}

// freePort picks a port that is free for TCP and UDP on loopback, below
// the kernel's ephemeral range (32768 and up on Linux): a port the kernel
// hands out for another test's port-0 listener or outgoing connection
// could otherwise be taken between this pick and the node's bind.
func freePort(t testing.TB) int {
	for range 1000 {
		p := 20000 + mrand.IntN(12000)
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return p
	}
	t.Fatal("clustertest: no free port found in 20000-32000")
	return 0
}

func (c *Cluster) newNode(name, role string) *Node {
	n := &Node{
		Name: name, Role: role,
		GRPC:   fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
		Gossip: fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
		Dir:    filepath.Join(c.dir, name),
	}
	n.args = []string{
		"--node-name", name, "--grpc-addr", n.GRPC, "--gossip-addr", n.Gossip, "--metrics-addr", "",
		"--data-dir", n.Dir, "--cluster-secret-file", filepath.Join(c.dir, "secret"),
		"--api-tokens-file", filepath.Join(c.dir, "tokens"), "--log-format", "json", "--log-level", "debug",
	}
	if c.caFile != "" {
		n.args = append(n.args, "--tls-ca", c.caFile)
		if role == "controlplane" {
			n.args = append(n.args, "--tls-ca-key", filepath.Join(filepath.Dir(c.caFile), "ca-key.pem"))
		}
	}
	c.mu.Lock()
	c.Nodes[name] = n
	c.order = append(c.order, name)
	c.mu.Unlock()
	return n
}

// ControlPlaneAddrs are the gRPC addresses of the control-plane nodes.
func (c *Cluster) ControlPlaneAddrs() []string {
	var out []string
	for _, name := range c.order {
		if n := c.Nodes[name]; n.Role == "controlplane" {
			out = append(out, n.GRPC)
		}
	}
	return out
}

// Add starts a node of role (host, dns, notifier) joining through the
// control plane, with extra flags, and returns it (not yet healthy: see
// WaitHealthy).
func (c *Cluster) Add(name, role string, args ...string) *Node {
	c.t.Helper()
	n := c.newNode(name, role)
	n.args = append(n.args, "--seeds", strings.Join(c.ControlPlaneAddrs(), ","))
	if role == "dns" {
		// A free DNS port, so that tests never meet a dns processor already
		// on the default one; a later --dns-addr in args wins.
		n.args = append(n.args, "--dns-addr", fmt.Sprintf("127.0.0.1:%d", freePort(c.t)))
	}
	n.args = append(n.args, args...)
	c.run(n)
	return n
}

func (c *Cluster) run(n *Node) {
	c.t.Helper()
	b := binaries[n.Role]
	logf, err := os.OpenFile(filepath.Join(c.dir, n.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(c.bin, b.bin), n.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start %s: %v", n.Name, err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
}

// Kill sends SIGKILL to a node and waits until it is gone.
func (c *Cluster) Kill(name string) { c.signal(name, syscall.SIGKILL) }

// Stop sends SIGTERM (a graceful stop) and waits until the node is gone.
func (c *Cluster) Stop(name string) { c.signal(name, syscall.SIGTERM) }

func (c *Cluster) signal(name string, sig syscall.Signal) {
	c.t.Helper()
	n := c.Nodes[name]
	if n == nil || n.cmd == nil {
		c.t.Fatalf("no running node %s", name)
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	n.cmd = nil
}

// Restart starts a stopped or killed node again with the same name, data
// and flags.
func (c *Cluster) Restart(name string) {
	c.t.Helper()
	c.run(c.Nodes[name])
}

func (c *Cluster) stopAll() {
	for i := len(c.order) - 1; i >= 0; i-- {
		n := c.Nodes[c.order[i]]
		if n.cmd != nil {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		select {
		case <-n.exited:
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	}
	if c.t.Failed() {
		for _, name := range c.order {
			b, _ := os.ReadFile(filepath.Join(c.dir, name+".log"))
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			c.t.Logf("--- last lines of %s's log ---\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	}
}

// WaitHealthy waits until a node's health service says SERVING.
func (c *Cluster) WaitHealthy(name string, d time.Duration) {
	c.t.Helper()
	n := c.Nodes[name]
	b := binaries[n.Role]
	deadline := time.Now().Add(d)
	for {
		args := []string{"healthcheck", "--grpc-addr", n.GRPC, "--timeout", "1s"}
		if c.caFile != "" {
			args = append(args, "--tls-ca", c.caFile)
		}
		cmd := exec.Command(filepath.Join(c.bin, b.bin), args...)
		if cmd.Run() == nil {
			return
		}
		select {
		case <-n.exited:
			c.t.Fatalf("%s exited before it was healthy", name)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not healthy after %s", name, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Dial connects to a node with the operator token.
func (c *Cluster) Dial(name string) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpcclient.Dial(c.Nodes[name].GRPC, grpcclient.Config{Auth: auth.BearerToken(c.Token), TLS: c.tls, MaxRetries: -1})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// ControlPlane returns a control-plane client with the operator token.
func (c *Cluster) ControlPlane() *cpclient.Client {
	c.t.Helper()
	cl, err := cpclient.New(cpclient.Config{Endpoints: c.ControlPlaneAddrs(), Dial: grpcclient.Config{Auth: auth.BearerToken(c.Token), TLS: c.tls}})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// WaitFor polls cond until it holds, failing the test after d.
func (c *Cluster) WaitFor(what string, d time.Duration, cond func(ctx context.Context) bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ok := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// JoinAs admits a node called name that performs role, for a test that
// acts as that node from its own process (an in-process engine, say): the
// join is committed through the control plane as a real node's is, proven
// with the cluster secret, so the node's calls carry that role. Nothing
// serves the address it registers. It returns the authentication the
// node's connections use.
func (c *Cluster) JoinAs(name, role string) grpcclient.Auth {
	c.t.Helper()
	key := c.nodeKey(name)
	na := auth.NewNodeAuth(name, c.Secret, key)
	cl, err := cpclient.New(cpclient.Config{Endpoints: c.ControlPlaneAddrs(), Dial: grpcclient.Config{Auth: na, TLS: c.tls}})
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &hivemindv1.JoinRequest{Name: name, Roles: &hivemindv1.Roles{Performs: []string{role}}, GrpcAddress: fmt.Sprintf("127.0.0.1:%d", freePort(c.t)), Incarnation: 1}
	key.SignJoin(req)
	if _, err := cl.Join(ctx, req); err != nil {
		c.t.Fatalf("clustertest: join %s as %s: %v", name, role, err)
	}
	return na
}

// nodeKey is the identity key of a node JoinAs admits, one per name, kept
// in KeyDir(name) so that a process the test starts can be that node too.
func (c *Cluster) nodeKey(name string) auth.NodeKey {
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	k, err := auth.LoadOrCreateNodeKey(c.KeyDir(name))
	if err != nil {
		c.t.Fatal(err)
	}
	return k
}

// KeyDir is the directory holding the node key of a node JoinAs admitted
// (auth.LoadOrCreateNodeKey).
func (c *Cluster) KeyDir(name string) string { return filepath.Join(c.dir, "keys", name) }

// ControlPlaneAs returns a control-plane client authenticated as node name
// (see JoinAs).
func (c *Cluster) ControlPlaneAs(name string) *cpclient.Client {
	c.t.Helper()
	cl, err := cpclient.New(cpclient.Config{Endpoints: c.ControlPlaneAddrs(), Dial: grpcclient.Config{Auth: auth.NewNodeAuth(name, c.Secret, c.nodeKey(name)), TLS: c.tls}})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// CAFile is the CA certificate of a cluster started with Options.TLS; ""
// otherwise.
func (c *Cluster) CAFile() string { return c.caFile }

// SecretFile is the file holding the cluster secret, for a process a test
// starts itself (secret.Load("", path)).
func (c *Cluster) SecretFile() string { return filepath.Join(c.dir, "secret") }
