//go:build unix

package check

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the program in a process group of its own and makes
// the context's cancel kill that group.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
