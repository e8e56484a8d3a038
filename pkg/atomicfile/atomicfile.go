// Package atomicfile writes small state files so that a crash leaves
// either the old content or the new, never a mix: the data goes to a
// temporary file in the same directory, which is synced, renamed over the
// target, and the directory is synced so the rename itself is durable.
//
// It also gives those files a version: a first line naming the kind of
// file and the format version, so a newer binary can read the previous
// format and an older one refuses a newer format instead of misreading it.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Write replaces path with data, created with mode perm.
func Write(path string, data []byte, perm os.FileMode) error {
	p, err := Prepare(path, data, perm)
	if err != nil {
		return err
	}
	return p.Commit()
}

// Pending is a file written and synced under a temporary name, not yet
// in place. Writing (the slow part) and replacing can so be done apart,
// for instance when only the replacing has to happen under a lock.
type Pending struct {
	path, tmp string
}

// Prepare writes data to a synced temporary file beside path. Commit puts
// it in place; Abort removes it.
func Prepare(path string, data []byte, perm os.FileMode) (p *Pending, err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = tmp.Write(data); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return nil, fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &Pending{path: path, tmp: tmp.Name()}, nil
}

// Commit renames the temporary file over the target and syncs the
// directory.
func (p *Pending) Commit() error {
	if err := os.Rename(p.tmp, p.path); err != nil {
		_ = os.Remove(p.tmp)
		return fmt.Errorf("write %s: %w", p.path, err)
	}
	return SyncDir(filepath.Dir(p.path))
}

// Abort removes the temporary file; the target is left as it was.
func (p *Pending) Abort() error {
	if err := os.Remove(p.tmp); err != nil {
		return fmt.Errorf("write %s: %w", p.path, err)
	}
	return nil
}

// SyncDir makes the entries of dir (a rename, a new file) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// ErrNewerFormat is returned when a file is in a format version newer
// than the one this binary writes.
var ErrNewerFormat = errors.New("written by a newer version")

// WriteVersioned replaces path, atomically, with a first line
// "<kind> <version>" followed by body.
func WriteVersioned(path, kind string, version int, body []byte, perm os.FileMode) error {
	data := make([]byte, 0, len(kind)+8+len(body))
	data = append(data, kind...)
	data = append(data, ' ')
	data = strconv.AppendInt(data, int64(version), 10)
	data = append(data, '\n')
	data = append(data, body...)
	return Write(path, data, perm)
}

// ReadVersioned reads a file written by WriteVersioned and returns its
// version and body. A file without the first line is taken as version
// legacy (the format written before files carried a version; 0 when there
// was none) and returned whole. A version above current is refused with
// an error naming both versions (errors.Is ErrNewerFormat). A missing file
// is reported as os.ErrNotExist.
func ReadVersioned(path, kind string, legacy, current int) (int, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	prefix := kind + " "
	if !bytes.HasPrefix(data, []byte(prefix)) {
		if legacy == 0 {
			return 0, nil, fmt.Errorf("%s: not a %s file (no %q header)", path, kind, prefix)
		}
		return legacy, data, nil
	}
	line, body, ok := bytes.Cut(data[len(prefix):], []byte{'\n'})
	if !ok {
		return 0, nil, fmt.Errorf("%s: %s header line not terminated", path, kind)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(line)))
	if err != nil || v < 1 {
		return 0, nil, fmt.Errorf("%s: %s format version %q is not a positive number", path, kind, line)
	}
	if v > current {
		return 0, nil, fmt.Errorf("%s: %s format version %d %w; this binary reads versions up to %d", path, kind, v, ErrNewerFormat, current)
	}
	return v, body, nil
}
