//go:build !unix

package check

import "os/exec"

// setProcessGroup leaves the default: the context's cancel kills the program.
func setProcessGroup(*exec.Cmd) {}
