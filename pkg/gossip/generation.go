package gossip

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hivemind/hivemind/pkg/atomicfile"
)

// GenerationFile is the file in the data directory that holds the node's
// generation.
const GenerationFile = "generation"

// The generation file's kind and format version: version 1 was the bare
// number, version 2 adds the header line.
const (
	generationKind    = "hivemind-generation"
	generationVersion = 2
)

// LoadGeneration returns the generation stored in dir, 0 when there is
// none yet.
func LoadGeneration(dir string) (uint64, error) {
	path := filepath.Join(dir, GenerationFile)
	_, b, err := atomicfile.ReadVersioned(path, generationKind, 1, generationVersion)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("gossip: read generation: %w", err)
	}
	g, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("gossip: generation file %s: %w", path, err)
	}
	return g, nil
}

// raiseGeneration stores the generation after the one in dir and returns
// it. The file is replaced atomically and synced before the new value is
// used, so a crash can never hand out the same generation twice.
func raiseGeneration(dir string) (uint64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("gossip: data dir: %w", err)
	}
	g, err := LoadGeneration(dir)
	if err != nil {
		return 0, err
	}
	g++
	body := []byte(strconv.FormatUint(g, 10) + "\n")
	if err := atomicfile.WriteVersioned(filepath.Join(dir, GenerationFile), generationKind, generationVersion, body, 0o600); err != nil {
		return 0, fmt.Errorf("gossip: write generation: %w", err)
	}
	return g, nil
}
