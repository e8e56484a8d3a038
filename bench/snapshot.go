package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// benchSnapshot measures controlplane.snapshot: a 3-member cluster holds
// hosts host records (/nodes/<host>/host) and events appended events;
// ControlPlane/Snapshot saves it to a file while writers keep writing
// (their p99 during the save is the row's p99), then the file is restored
// into a new 3-member cluster with `hivemind-controlplane restore`, timed
// until the new cluster answers a linearizable read of the last host.
func benchSnapshot(ctx context.Context, dir, binDir string, hosts, events int) ([]result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	old, eps, err := startHivemind(filepath.Join(dir, "old"), binDir)
	if err != nil {
		return nil, err
	}
	defer old.stop()
	cl, err := cpclient.New(cpclient.Config{Endpoints: eps, Dial: dialConfig()})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := waitUntil(withTimeout(ctx, 30*time.Second), "hivemind leader", func(c context.Context) error {
		_, err := cl.Put(c, &hivemindv1.PutRequest{Key: "/bench/ready", Value: []byte("1")})
		return err
	}); err != nil {
		return nil, err
	}
	t0 := time.Now()
	record := []byte(`{"seq":1,"addrs":["10.0.0.1","fd00::1"],"services":[{"name":"web","port":8080,"tags":["a","b"]}],"labels":{"rack":"r1","zone":"z1"}}`)
	if err := parallel(ctx, 64, hosts, func(c context.Context, i int) error {
		_, err := cl.Put(c, &hivemindv1.PutRequest{Key: hostKey(i), Value: record})
		return err
	}); err != nil {
		return nil, fmt.Errorf("load hosts: %w", err)
	}
	payload := []byte(strings.Repeat("e", 200))
	if err := parallel(ctx, 256, events, func(c context.Context, i int) error {
		_, err := cl.AppendEvent(c, &hivemindv1.AppendEventRequest{Type: "bench.event", Uri: fmt.Sprintf("/bench/events/%d", i%1000), Payload: payload})
		return err
	}); err != nil {
		return nil, fmt.Errorf("load events: %w", err)
	}
	fmt.Fprintf(os.Stderr, "snapshot: loaded %d hosts and %d events in %s\n", hosts, events, time.Since(t0).Round(time.Millisecond))

	// Writers go on during the save; only latencies of writes that start
	// and end while it runs count. The same writers for as long before the
	// save give the latencies to compare with.
	var phase atomic.Int32 // 0: warming up, 1: before the save, 2: during it
	stop := make(chan struct{})
	var mu sync.Mutex
	var lat, before []time.Duration
	var writeErrs atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				during := phase.Load()
				c, cancel := context.WithTimeout(ctx, 10*time.Second)
				t := time.Now()
				_, err := cl.Put(c, &hivemindv1.PutRequest{Key: hostKey((w*7919 + i) % hosts), Value: record})
				d := time.Since(t)
				cancel()
				if during == 0 || phase.Load() != during {
					continue
				}
				if err != nil {
					if during == 2 {
						writeErrs.Add(1)
					}
					continue
				}
				mu.Lock()
				if during == 2 {
					lat = append(lat, d)
				} else {
					before = append(before, d)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second) // writers at full speed first
	phase.Store(1)
	time.Sleep(2 * time.Second)
	file := filepath.Join(dir, "bench.hmsnap")
	phase.Store(2)
	start := time.Now()
	size, err := saveSnapshotFile(ctx, eps[1], file)
	saveTime := time.Since(start)
	phase.Store(0)
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("save: %w", err)
	}
	mu.Lock()
	save, base := summarize(lat), summarize(before)
	mu.Unlock()
	save.Name, save.System, save.Clients, save.Errors = "controlplane.snapshot", "hivemind", 8, writeErrs.Load()
	save.Seconds = saveTime.Seconds()
	save.Note = fmt.Sprintf("save of %d hosts + %d events: %.2fs, %d bytes; p50/p99/max are the %d puts of 8 writers during the save (in the 2s before it: %d puts, p50 %.1fms, p99 %.1fms)",
		hosts, events, saveTime.Seconds(), size, save.Ops, base.Ops, base.P50ms, base.P99ms)
	fmt.Fprintf(os.Stderr, "snapshot: saved %d bytes in %s; writes during the save: %d, p99 %.1fms, %d errors; before it: p99 %.1fms\n", size, saveTime.Round(time.Millisecond), save.Ops, save.P99ms, save.Errors, base.P99ms)
	old.stop()

	rst, err := restoreAndServe(ctx, filepath.Join(dir, "new"), binDir, file, eps, filepath.Join(dir, "old"), hostKey(hosts-1))
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	rst.Note = fmt.Sprintf("restore of the %d-byte file into 3 data directories, then the new cluster started until a linearizable Get of a restored host answers; seconds is the whole, the restore commands alone %s", size, rst.Note)
	now := time.Now().UTC().Format(time.RFC3339)
	save.Time, rst.Time = now, now
	return []result{save, rst}, nil
}

func hostKey(i int) string { return fmt.Sprintf("/nodes/host-%05d/host", i) }

// parallel runs op for 0..n-1 on workers goroutines and returns the first
// error.
func parallel(ctx context.Context, workers, n int, op func(context.Context, int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				c, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := op(c, i)
				cancel()
				if err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

// saveSnapshotFile streams a snapshot from ep into path and returns its
// size. The file is checked afterwards by `snapshot status` in the restore
// step (restore refuses a damaged file).
func saveSnapshotFile(ctx context.Context, ep, path string) (int64, error) {
	conn, err := grpcclient.Dial(ep, grpcclient.Config{MaxRetries: -1, Auth: dialConfig().Auth})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	st, err := hivemindv1.NewControlPlaneClient(conn).Snapshot(ctx, &hivemindv1.SnapshotRequest{})
	if err != nil {
		return 0, err
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	var sum []byte
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		k, err := f.Write(resp.GetData())
		n += int64(k)
		if err != nil {
			return 0, err
		}
		sum = resp.GetSha256()
	}
	if len(sum) == 0 {
		return 0, errors.New("the stream ended without its trailer")
	}
	return n, f.Sync()
}

// restoreAndServe restores file into three data directories for a cluster
// on the old cluster's gRPC addresses and starts it, returning a row timed
// from the first restore command to the first answer.
func restoreAndServe(ctx context.Context, dir, binDir, file string, eps []string, oldDir, probeKey string) (result, error) {
	bin := filepath.Join(binDir, "hivemind-controlplane")
	var cluster []string
	for i, ep := range eps {
		cluster = append(cluster, fmt.Sprintf("cp%d=%s", i+1, ep))
	}
	// Each member's directory is prepared on its own machine: the three
	// restores run at once.
	start := time.Now()
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for i := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("cp%d", i+1)
			out, err := exec.CommandContext(ctx, bin, "restore", "--snapshot", file, "--data-dir", filepath.Join(dir, name),
				"--node-name", name, "--initial-cluster", strings.Join(cluster, ",")).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("%s restore: %v: %s", name, err, out)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return result{}, err
	}
	restoreOnly := time.Since(start)
	ports, err := freePorts(6)
	if err != nil {
		return result{}, err
	}
	p := &procs{dir: dir}
	defer p.stop()
	for i, ep := range eps {
		name := fmt.Sprintf("cp%d", i+1)
		if err := p.start("restored-"+name, bin, "--node-name", name, "--grpc-addr", ep,
			"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", ports[i]), "--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			"--data-dir", filepath.Join(dir, name), "--initial-cluster", strings.Join(cluster, ","), "--log-level", "warn",
			"--cluster-secret-file", filepath.Join(oldDir, "cluster-secret"), "--api-tokens-file", filepath.Join(oldDir, "api-tokens")); err != nil {
			return result{}, err
		}
	}
	cl, err := cpclient.New(cpclient.Config{Endpoints: eps, Dial: dialConfig()})
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	if err := waitUntil(withTimeout(ctx, 60*time.Second), "restored cluster", func(c context.Context) error {
		resp, err := cl.Get(c, &hivemindv1.GetRequest{Key: probeKey})
		if err == nil && !resp.GetFound() {
			return fmt.Errorf("%s missing after restore", probeKey)
		}
		return err
	}); err != nil {
		return result{}, err
	}
	total := time.Since(start)
	r := result{Name: "controlplane.snapshot.restore", System: "hivemind", Ops: 1, Seconds: total.Seconds()}
	load, _ := os.ReadFile("/proc/loadavg")
	r.Note = fmt.Sprintf("%.2fs (the three at once); machine load average %s", restoreOnly.Seconds(), strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))
	r.P50ms, r.P99ms, r.MaxMs = ms(total), ms(total), ms(total)
	return r, nil
}
