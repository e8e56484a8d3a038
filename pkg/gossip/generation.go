package gossip

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// GenerationFile is the file in the data directory that holds the node's
// generation.
const GenerationFile = "generation"

// LoadGeneration returns the generation stored in dir, 0 when there is
// none yet.
func LoadGeneration(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, GenerationFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("gossip: read generation: %w", err)
	}
	g, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("gossip: generation file %s: %w", filepath.Join(dir, GenerationFile), err)
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
	tmp, err := os.CreateTemp(dir, GenerationFile+".*")
	if err != nil {
		return 0, fmt.Errorf("gossip: write generation: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(strconv.FormatUint(g, 10) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, GenerationFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return 0, fmt.Errorf("gossip: write generation: %w", err)
	}
	return g, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
