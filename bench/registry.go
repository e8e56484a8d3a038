package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cluster"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/registry"
	"github.com/hivemind/hivemind/pkg/secret"
)

// presetFlag names the control plane's --gossip-preset for a preset.
var presetFlag = map[string]string{"hivemind": "fast", "memberlist-lan": "lan"}

// registryDetection measures failure detection end to end, as an operator
// sees it: a real 3-node control plane (processes) and n in-process nodes
// that joined through it; each run kills one node's gossip without a leave
// and times until the registry commits member.failed for it (the leader's
// reconciler). Any member.failed for a node that was not killed is a false
// positive.
func registryDetection(dir, binDir string, p membershipPreset, n, runs int, loaded bool) (result, error) {
	procs, eps, err := startHivemindWith(dir, binDir, func(i int) []string {
		return []string{"--gossip-preset", presetFlag[p.system]}
	})
	if err != nil {
		return result{}, err
	}
	defer procs.stop()
	raw, err := os.ReadFile(filepath.Join(dir, "cluster-secret"))
	if err != nil {
		return result{}, err
	}
	sec, err := secret.New([]byte(strings.TrimSpace(string(raw))))
	if err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp, err := cpclient.New(cpclient.Config{Endpoints: eps, Dial: dialConfig()})
	if err != nil {
		return result{}, err
	}
	defer cp.Close()
	if err := waitUntil(withTimeout(ctx, time.Minute), "control plane", func(c context.Context) error {
		_, err := cp.Put(c, &hivemindv1.PutRequest{Key: "/bench/ready", Value: []byte("1")})
		return err
	}); err != nil {
		return result{}, err
	}

	// Member events, as the registry commits them.
	var mu sync.Mutex
	killed := map[string]time.Time{}
	failedAt := map[string]chan time.Time{}
	falsePos := map[string]bool{}
	go func() {
		_ = cp.Watch(ctx, &hivemindv1.WatchRequest{Prefix: registry.Prefix, Types: []string{registry.EventFailed}}, func(resp *hivemindv1.WatchResponse) error {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			for _, e := range resp.GetEvents() {
				name := registry.NameOf(e.GetUri())
				if _, ok := killed[name]; !ok {
					falsePos[name] = true
					continue
				}
				select {
				case failedAt[name] <- now:
				default:
				}
			}
			return nil
		})
	}()

	type member struct {
		node   *cluster.Node
		cancel context.CancelFunc
	}
	var members []member
	defer func() {
		for _, m := range members {
			m.cancel()
			_ = m.node.Agent().Shutdown()
		}
	}()
	// Warnings and errors of the in-process nodes go to one file beside the
	// cluster's logs (kept with HIVEMIND_BENCH_KEEP=1), to tell why a node
	// did not join or was declared failed.
	nodeLog, err := os.OpenFile(filepath.Join(dir, "nodes.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return result{}, err
	}
	defer nodeLog.Close()
	logs := slog.New(slog.NewTextHandler(nodeLog, &slog.HandlerOptions{Level: slog.LevelWarn}))
	next := 0
	start := func() error {
		name := fmt.Sprintf("m%03d", next)
		next++
		g := p.config(name)
		g.BindAddr, g.BindPort, g.AdvertisePort = "127.0.0.1", 0, 0
		logger := logs.With("node", name)
		g.Secret, g.DataDir, g.Logger = sec, filepath.Join(dir, "nodes", name), logger
		key := auth.NewNodeKey()
		node, err := cluster.NewNode(cluster.NodeConfig{
			Name: name, Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GRPCAddress: "127.0.0.1:1", Key: key,
			Seeds: eps, Dial: grpcclient.Config{Auth: auth.NewNodeAuth(name, sec, key)}, Gossip: g, Logger: logger,
		})
		if err != nil {
			return err
		}
		nctx, ncancel := context.WithCancel(ctx)
		node.Start(nctx)
		members = append(members, member{node, ncancel})
		select {
		case <-node.Joined():
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%s did not join within 30s (see %s)", name, nodeLog.Name())
		}
	}
	for len(members) < n {
		if err := start(); err != nil {
			return result{}, err
		}
	}
	allAlive := func(c context.Context) error {
		resp, err := cp.Range(c, &hivemindv1.RangeRequest{Prefix: registry.Prefix})
		if err != nil {
			return err
		}
		alive := 0
		for _, kv := range resp.GetKvs() {
			if m, err := registry.Decode(kv.GetValue()); err == nil && m.GetState() == hivemindv1.MemberState_MEMBER_STATE_ALIVE {
				alive++
			}
		}
		if alive != n+3 {
			return fmt.Errorf("%d alive in the registry, want %d", alive, n+3)
		}
		return nil
	}
	if err := waitUntil(withTimeout(ctx, 2*time.Minute), "every member alive", allAlive); err != nil {
		return result{}, err
	}
	if loaded {
		stop, err := burnCPU(2)
		if err != nil {
			return result{}, err
		}
		defer stop()
	}

	var lat []time.Duration
	missed := 0
	limit := 30 * time.Second
	for run := 0; run < runs; run++ {
		i := rand.IntN(len(members))
		victim := members[i]
		name := victim.node.Agent().LocalNode().Name
		ch := make(chan time.Time, 1)
		mu.Lock()
		failedAt[name], killed[name] = ch, time.Now()
		mu.Unlock()
		t0 := time.Now()
		victim.cancel()
		_ = victim.node.Agent().Shutdown()
		members = append(members[:i], members[i+1:]...)
		select {
		case at := <-ch:
			lat = append(lat, at.Sub(t0))
		case <-time.After(limit):
			missed++
		}
		if err := start(); err != nil {
			return result{}, err
		}
	}
	r := summarize(lat)
	r.Name, r.System, r.Clients = "membership.failure_detection", p.system, n
	mu.Lock()
	fp := len(falsePos)
	mu.Unlock()
	r.FalsePositives = &fp
	load := "idle"
	if loaded {
		load = "2 busy-loop processes"
	}
	r.Note = fmt.Sprintf("kill → member.failed committed in the registry; %d false positives; %s; 3 control-plane processes + %d in-process nodes on loopback, %s; %d runs, %d not failed within %v",
		fp, p.note, n, load, runs, missed, limit)
	fmt.Fprintf(os.Stderr, "membership via registry %s (%s): p50 %.0fms p99 %.0fms, false positives %d, missed %d\n", p.system, load, r.P50ms, r.P99ms, fp, missed)
	return r, nil
}

func withTimeout(ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	go func() { <-c.Done(); cancel() }()
	return c
}
