//go:build !linux

package raftnode

import "os"

// preallocate sizes f to size bytes that read as zero.
func preallocate(f *os.File, size int64) error { return f.Truncate(size) }
