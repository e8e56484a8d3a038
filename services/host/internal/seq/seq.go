// Package seq is the host's own sequence number: every change the host
// agent publishes carries the next one, and a dns processor applies a
// change only when its number is newer than the last it has from that host.
// So a number must never be reused, not even after a crash.
//
// Like a generation counter, the file in the data directory records a
// ceiling: no number above it has been handed out. Numbers are reserved in
// blocks — the ceiling is raised, and fsync'd, before any number under the
// new ceiling is handed out — so a crash skips at most one block and costs
// one fsync per block. A clean Close lowers the ceiling to the last number
// used, so a restart does not skip any.
package seq

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/hivemind/hivemind/pkg/atomicfile"
)

// FileName is the sequence file in the data directory.
const FileName = "host.seq"

// DefaultBlock is how many numbers one fsync reserves.
const DefaultBlock = 1024

// Errors.
var (
	ErrLocked    = errors.New("seq: the sequence file is in use by another process")
	ErrCorrupt   = errors.New("seq: sequence file corrupt")
	ErrNewer     = errors.New("seq: sequence file written by a newer version")
	ErrExhausted = errors.New("seq: sequence numbers exhausted")
	ErrClosed    = errors.New("seq: closed")
)

// The file's first words name its kind and format version.
const (
	kind    = "hivemind-seq"
	version = 1
	magic   = kind + " 1"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Sequence hands out increasing numbers. It is safe for concurrent use.
type Sequence struct {
	dir, path string
	block     uint64
	unlock    func() error

	mu      sync.Mutex
	last    uint64 // the last number handed out (or possibly handed out)
	ceiling uint64 // persisted: no number above it was handed out
	closed  bool
}

// Open opens (or creates) the sequence in dir and locks it against other
// processes. block <= 0 means DefaultBlock. The first number ever is 1.
func Open(dir string, block int) (*Sequence, error) {
	if block <= 0 {
		block = DefaultBlock
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("seq: %w", err)
	}
	unlock, err := lock(filepath.Join(dir, FileName+".lock"))
	if err != nil {
		return nil, err
	}
	s := &Sequence{dir: dir, path: filepath.Join(dir, FileName), block: uint64(block), unlock: unlock}
	ceiling, err := readCeiling(s.path)
	if err != nil {
		unlock()
		return nil, err
	}
	// Every number up to the ceiling may have been used before a crash.
	s.last, s.ceiling = ceiling, ceiling
	return s, nil
}

// Next is the next number, greater than every number this sequence has
// ever handed out, in this process or an earlier one.
func (s *Sequence) Next() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if s.last == math.MaxUint64 {
		return 0, ErrExhausted
	}
	if s.last == s.ceiling {
		next := s.ceiling + min(s.block, math.MaxUint64-s.ceiling)
		if err := s.persist(next); err != nil {
			return 0, err
		}
		s.ceiling = next
	}
	s.last++
	return s.last, nil
}

// Last is the last number handed out (after Open: the highest that may
// have been handed out before).
func (s *Sequence) Last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Close records the last number used, so the next Open continues right
// after it, and releases the lock.
func (s *Sequence) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.last < s.ceiling {
		err = s.persist(s.last)
	}
	return errors.Join(err, s.unlock())
}

// persist replaces the file with one recording ceiling, durably.
func (s *Sequence) persist(ceiling uint64) error {
	body := fmt.Sprintf("%s %d", magic, ceiling)
	data := fmt.Sprintf("%s %08x\n", body, crc32.Checksum([]byte(body), crcTable))
	if err := atomicfile.Write(s.path, []byte(data), 0o600); err != nil {
		return fmt.Errorf("seq: %w", err)
	}
	return nil
}

// readCeiling reads the file; a missing file is a new sequence. A file that
// does not check out is an error, not a fresh start: starting again from
// zero would reuse numbers.
func readCeiling(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("seq: %w", err)
	}
	// Every version keeps the frame "<kind> <version> ... <crc>", the
	// checksum covering all before it, so a flipped digit in the version
	// reads as damage, and a newer version as newer.
	line := strings.TrimSuffix(string(data), "\n")
	i := strings.LastIndexByte(line, ' ')
	if i < 0 || !strings.HasPrefix(line, kind+" ") {
		return 0, fmt.Errorf("%w: %s: %q", ErrCorrupt, path, data)
	}
	body, sum := line[:i], line[i+1:]
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil || uint32(want) != crc32.Checksum([]byte(body), crcTable) {
		return 0, fmt.Errorf("%w: %s: checksum mismatch", ErrCorrupt, path)
	}
	if f := strings.Fields(body); len(f) > 1 {
		if v, err := strconv.Atoi(f[1]); err == nil && v > version {
			return 0, fmt.Errorf("%w: %s has format version %d, this binary reads version %d", ErrNewer, path, v, version)
		}
	}
	if !strings.HasPrefix(body, magic+" ") {
		return 0, fmt.Errorf("%w: %s: %q", ErrCorrupt, path, data)
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(body, magic+" "), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	return n, nil
}
