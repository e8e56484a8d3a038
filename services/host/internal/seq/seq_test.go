package seq

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// crash drops the sequence the way a killed process does: the lock goes,
// nothing more is written.
func (s *Sequence) crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.unlock()
}

func take(t *testing.T, s *Sequence, n int) []uint64 {
	t.Helper()
	var out []uint64
	for range n {
		v, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestMonotonicAcrossCleanReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got := take(t, s, 6); got[0] != 1 || got[5] != 6 {
		t.Fatalf("first numbers %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	s, err = Open(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A clean close skips nothing.
	if got := take(t, s, 1); got[0] != 7 {
		t.Fatalf("after clean reopen: %v", got)
	}
}

func TestNoReuseAfterCrash(t *testing.T) {
	dir := t.TempDir()
	var used uint64
	for round := 0; round < 5; round++ {
		s, err := Open(dir, 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range take(t, s, round*3+1) {
			if v <= used {
				t.Fatalf("round %d: %d after %d", round, v, used)
			}
			used = v
		}
		s.crash()
	}
	// A crash costs at most one block.
	if used > 5*4+(1+4+7+10+13) {
		t.Errorf("skipped too much: last %d", used)
	}
}

func TestConcurrentNextIsUnique(t *testing.T) {
	s, err := Open(t.TempDir(), 8)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				v, err := s.Next()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[v] {
					t.Errorf("%d handed out twice", v)
				}
				seen[v] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if s.Last() != 200 {
		t.Errorf("last %d", s.Last())
	}
}

func TestLockedAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	take(t, s, 1)
	if _, err := Open(dir, 0); !errors.Is(err, ErrLocked) {
		t.Errorf("second open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(dir, FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"flipped digit": append([]byte{}, []byte(string(data[:len(data)-12])+"9"+string(data[len(data)-11:]))...),
		"garbage":       []byte("hello\n"),
		"truncated":     data[:5],
	} {
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir, 0); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s (%q): %v", name, bad, err)
		}
	}
}

func TestNewerFormatRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	newer := []byte("hivemind-seq 2 5000 9827f758\n")
	if err := os.WriteFile(path, newer, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, 0)
	if !errors.Is(err, ErrNewer) || !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("open of a version 2 file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(newer) {
		t.Fatalf("refused file changed: %q", b)
	}
}
