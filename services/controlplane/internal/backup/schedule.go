package backup

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hivemind/hivemind/pkg/atomicfile"
)

// FileSuffix ends the names of the snapshot files the Scheduler writes.
const FileSuffix = ".hmsnap"

// SchedulerConfig configures scheduled snapshots.
type SchedulerConfig struct {
	// Dir receives the files, named snapshot-<UTC time>-r<revision>.hmsnap.
	Dir string
	// Interval between snapshots.
	Interval time.Duration
	// Retain is how many of the newest files are kept; older ones are
	// removed after each new one is written. At least 1.
	Retain   int
	Source   Source
	IsLeader func() bool
	// Registry receives the metrics; nil registers none.
	Registry prometheus.Registerer
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Scheduler writes a snapshot file every Interval while its member leads,
// so one member writes at a time and the cluster's snapshots follow the
// leader.
type Scheduler struct {
	cfg      SchedulerConfig
	lastOK   prometheus.Gauge
	lastSize prometheus.Gauge
	failures prometheus.Counter
}

// NewScheduler checks cfg, creates Dir and registers the metrics.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("--snapshot-interval: %s; must be positive", cfg.Interval)
	}
	if cfg.Retain < 1 {
		return nil, fmt.Errorf("--snapshot-retain: %d; keep at least 1", cfg.Retain)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("--snapshot-dir: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Scheduler{
		cfg: cfg,
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hivemind_controlplane_snapshot_last_success_timestamp_seconds",
			Help: "Unix time of the last scheduled snapshot written by this member.",
		}),
		lastSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hivemind_controlplane_snapshot_last_size_bytes",
			Help: "Size of the last scheduled snapshot file written by this member.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hivemind_controlplane_snapshot_failures_total",
			Help: "Scheduled snapshots that could not be written.",
		}),
	}
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{s.lastOK, s.lastSize, s.failures} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Run writes snapshots until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.cfg.IsLeader() {
			continue
		}
		if path, size, err := s.WriteOne(); err != nil {
			s.failures.Inc()
			s.cfg.Logger.Error("scheduled snapshot failed", "err", err)
		} else {
			s.cfg.Logger.Info("scheduled snapshot written", "file", path, "bytes", size)
		}
	}
}

// WriteOne writes one snapshot file now and prunes the old ones.
func (s *Scheduler) WriteOne() (string, int, error) {
	now := s.cfg.Now().UTC()
	hdr, state, err := Take(s.cfg.Source, now)
	if err != nil {
		return "", 0, err
	}
	var buf bytes.Buffer
	buf.Grow(len(state) + 4096)
	if _, err := Encode(&buf, hdr, state); err != nil {
		return "", 0, err
	}
	name := fmt.Sprintf("snapshot-%s-r%d%s", now.Format("20060102T150405.000000000Z"), hdr.GetRevision(), FileSuffix)
	path := filepath.Join(s.cfg.Dir, name)
	if err := atomicfile.Write(path, buf.Bytes(), 0o600); err != nil {
		return "", 0, err
	}
	s.lastOK.Set(float64(now.UnixNano()) / 1e9)
	s.lastSize.Set(float64(buf.Len()))
	return path, buf.Len(), s.prune()
}

// prune removes all but the Retain newest snapshot files (their names sort
// by time).
func (s *Scheduler) prune() error {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "snapshot-") && strings.HasSuffix(e.Name(), FileSuffix) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	for len(names) > s.cfg.Retain {
		if err := os.Remove(filepath.Join(s.cfg.Dir, names[0])); err != nil {
			return err
		}
		names = names[1:]
	}
	return atomicfile.SyncDir(s.cfg.Dir)
}
