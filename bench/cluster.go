package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
)

// serverProcs, when positive, is the GOMAXPROCS of every server the
// benchmark starts, hivemind's and etcd's alike (-server-procs).
var serverProcs int

// procs is a set of cluster processes started by the benchmark.
type procs struct {
	cmds []*exec.Cmd
	dir  string
}

func (p *procs) start(logName string, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	if serverProcs > 0 {
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", serverProcs))
	}
	f, err := os.Create(filepath.Join(p.dir, logName+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	p.cmds = append(p.cmds, cmd)
	return nil
}

func (p *procs) stop() {
	for _, c := range p.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range p.cmds {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

// cpu is the user and system time the processes have used so far, read
// from /proc (zero where it cannot be read, such as off Linux).
func (p *procs) cpu() time.Duration {
	if p == nil {
		return 0
	}
	var ticks int64
	for _, c := range p.cmds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state is field 3, utime 14 and stime 15.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	// The kernel reports in clock ticks of USER_HZ, 100 on Linux.
	return time.Duration(ticks) * (time.Second / 100)
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	var ports []int
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startHivemind starts a 3-node control plane and returns its endpoints.
func startHivemind(dir, binDir string) (*procs, []string, error) {
	return startHivemindWith(dir, binDir, nil)
}

// startHivemindWith is startHivemind with more flags for member i.
func startHivemindWith(dir, binDir string, extra func(i int) []string) (*procs, []string, error) {
	ports, err := freePorts(9)
	if err != nil {
		return nil, nil, err
	}
	p := &procs{dir: dir}
	// A fresh secret and operator token, passed as files so they stay out
	// of the process list. The token has the admin scope: the bench's
	// thousands of clients share it, and admin operators are exempt from
	// the per-caller rate limit and watch cap (--rate-limit,
	// --max-watches-per-caller), which would otherwise throttle the load
	// being measured.
	apiToken = auth.GenerateAPIToken()
	secretFile, tokensFile := filepath.Join(dir, "cluster-secret"), filepath.Join(dir, "api-tokens")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(secretFile, []byte(auth.GenerateAPIToken()), 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(tokensFile, []byte("bench="+apiToken+":read,write,admin,filter\n"), 0o600); err != nil {
		return nil, nil, err
	}
	var cluster, eps []string
	for i := 0; i < 3; i++ {
		ep := fmt.Sprintf("127.0.0.1:%d", ports[i])
		eps = append(eps, ep)
		cluster = append(cluster, fmt.Sprintf("cp%d=%s", i+1, ep))
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("cp%d", i+1)
		args := []string{"--node-name", name, "--grpc-addr", eps[i], "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[6+i]),
			"--data-dir", filepath.Join(dir, name), "--initial-cluster", strings.Join(cluster, ","), "--log-level", "warn",
			"--cluster-secret-file", secretFile, "--api-tokens-file", tokensFile}
		if extra != nil {
			args = append(args, extra(i)...)
		}
		err := p.start("hivemind-"+name, filepath.Join(binDir, "hivemind-controlplane"), args...)
		if err != nil {
			p.stop()
			return nil, nil, err
		}
	}
	return p, eps, nil
}

// startEtcd starts a 3-node etcd on loopback and returns its client URLs.
func startEtcd(dir, bin string) (*procs, []string, error) {
	ports, err := freePorts(6)
	if err != nil {
		return nil, nil, err
	}
	p := &procs{dir: dir}
	var initial, eps []string
	for i := 0; i < 3; i++ {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, ports[3+i]))
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", ports[i]))
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("e%d", i+1)
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[3+i])
		client := "http://" + eps[i]
		err := p.start("etcd-"+name, bin,
			"--name", name, "--data-dir", filepath.Join(dir, name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "hivemind-bench", "--log-level", "warn")
		if err != nil {
			p.stop()
			return nil, nil, err
		}
	}
	return p, eps, nil
}

func waitUntil(ctx context.Context, what string, cond func(context.Context) error) error {
	var last error
	for {
		c, cancel := context.WithTimeout(ctx, time.Second)
		last = cond(c)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
