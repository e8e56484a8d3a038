package raftnode

import (
	"os"
	"syscall"
)

// fdatasync flushes file data (not metadata such as the modification time),
// which is all an appended log needs once its size is durable.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
