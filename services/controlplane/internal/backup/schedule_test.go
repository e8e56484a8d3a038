package backup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
)

// machineSource serves snapshots of a state machine outside any cluster.
type machineSource struct{ m *fsm.Machine }

func (s machineSource) Machine() *fsm.Machine       { return s.m }
func (machineSource) ClusterID() uint64             { return 0x5eed }
func (machineSource) Name() string                  { return "cp1" }
func (machineSource) Members() []*hivemindv1.Member { return nil }

func put(m *fsm.Machine, key string) {
	m.Apply(&raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: key, Value: []byte("v")}}})
}

func TestSchedulerWritesKeepsTheNewestAndReports(t *testing.T) {
	m := fsm.New(fsm.Config{})
	dir := filepath.Join(t.TempDir(), "snaps")
	reg := prometheus.NewRegistry()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s, err := NewScheduler(SchedulerConfig{Dir: dir, Interval: time.Hour, Retain: 2, Source: machineSource{m}, IsLeader: func() bool { return true },
		Registry: reg, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i := range 3 {
		put(m, "/app/k"+string(rune('a'+i)))
		now = now.Add(time.Minute)
		path, size, err := s.WriteOne()
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
		if got := testutil.ToFloat64(s.lastSize); got != float64(size) {
			t.Errorf("last size metric %v, want %d", got, size)
		}
		if got := testutil.ToFloat64(s.lastOK); got != float64(now.Unix()) {
			t.Errorf("last success metric %v, want %d", got, now.Unix())
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || filepath.Join(dir, names[0]) != paths[1] || filepath.Join(dir, names[1]) != paths[2] {
		t.Fatalf("files %v; want the two newest of %v and no temporary file", names, paths)
	}
	hdr, snap, err := ReadFile(paths[2])
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.GetKvs()) != 3 || hdr.GetRevision() != 3 || hdr.GetClusterId() != 0x5eed || !strings.Contains(paths[2], "-r3.hmsnap") {
		t.Fatalf("newest file %s: header %v, %d keys; want revision 3 with 3 keys", paths[2], hdr, len(snap.GetKvs()))
	}
	if _, err := NewScheduler(SchedulerConfig{Dir: dir, Interval: time.Hour, Retain: 0}); err == nil || !strings.Contains(err.Error(), "--snapshot-retain") {
		t.Fatalf("retain 0: %v, want an error naming --snapshot-retain", err)
	}
}
