package raftnode

import (
	"errors"
	"os"
	"syscall"
)

// preallocate reserves size zero-filled bytes for f, so that appending
// within them never changes the file's size.
func preallocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return f.Truncate(size)
	}
	return err
}
