package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesAndLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	for _, want := range []string{"first", "second, longer"} {
		if err := Write(path, []byte(want), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the file", len(entries))
	}
}

func TestWriteIntoMissingDirectoryFails(t *testing.T) {
	if err := Write(filepath.Join(t.TempDir(), "no", "such"), []byte("x"), 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestPrepareAbortLeavesTargetAlone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := Write(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Prepare(path, []byte("new"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Fatalf("prepared write already visible: %q", got)
	}
	if err := p.Abort(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if got, _ := os.ReadFile(path); string(got) != "old" || len(entries) != 1 {
		t.Fatalf("after abort: %q, %d entries", got, len(entries))
	}
	p, err = Prepare(path, []byte("new"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "new" {
		t.Fatalf("after commit: %q", got)
	}
}

func TestVersionedFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gen")
	if err := WriteVersioned(path, "hivemind-test", 2, []byte("42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, body, err := ReadVersioned(path, "hivemind-test", 1, 2)
	if err != nil || v != 2 || string(body) != "42\n" {
		t.Fatalf("read %d %q %v", v, body, err)
	}
	// The previous, headerless format is read as the legacy version.
	if err := os.WriteFile(path, []byte("41\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, body, err = ReadVersioned(path, "hivemind-test", 1, 2)
	if err != nil || v != 1 || string(body) != "41\n" {
		t.Fatalf("legacy read %d %q %v", v, body, err)
	}
	// A binary that knows only version 1 refuses version 2, naming both.
	if err := WriteVersioned(path, "hivemind-test", 2, []byte("42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = ReadVersioned(path, "hivemind-test", 1, 1)
	if !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "up to 1") {
		t.Fatalf("newer format: %v", err)
	}
	for _, bad := range []string{"hivemind-test x\n", "hivemind-test 0\n", "hivemind-test 1"} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, _, err := ReadVersioned(path, "hivemind-test", 1, 2); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	if _, _, err := ReadVersioned(filepath.Join(dir, "none"), "hivemind-test", 1, 2); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
