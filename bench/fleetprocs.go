package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The fleet suite stops and starts single processes of a procs by name;
// the procs keeps one slot per process, so stop() still ends them all.

// index is the slot of the process whose log is logName.
func (p *procs) index(logName string) int {
	for i, c := range p.cmds {
		if f, ok := c.Stdout.(*os.File); ok && strings.TrimSuffix(filepath.Base(f.Name()), ".log") == logName {
			return i
		}
	}
	return -1
}

// stopOne ends process i with SIGTERM (SIGKILL after 10 s).
func (p *procs) stopOne(i int) {
	c := p.cmds[i]
	_ = c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.Process.Kill()
		<-done
	}
}

// startAgain starts process i again with its arguments, its output
// appended to the same log, and returns when it was started.
func (p *procs) startAgain(i int) (time.Time, error) {
	old := p.cmds[i]
	f, err := os.OpenFile(old.Stdout.(*os.File).Name(), os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return time.Time{}, err
	}
	cmd := exec.Command(old.Path, old.Args[1:]...)
	cmd.Env = old.Env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return time.Time{}, fmt.Errorf("start %s again: %w", old.Path, err)
	}
	p.cmds[i] = cmd
	return start, nil
}

// procStat is one process's resident memory and CPU time so far.
type procStat struct {
	RSS int64 // bytes
	CPU time.Duration
}

func (p *procs) stat(i int) procStat {
	pid := p.cmds[i].Process.Pid
	var st procStat
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				st.RSS = kb << 10
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) >= 13 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			st.CPU = time.Duration(u+s) * (time.Second / 100)
		}
	}
	return st
}

// selfStat is the benchmark process's own.
func selfStat() procStat {
	p := &procs{cmds: []*exec.Cmd{{Process: &os.Process{Pid: os.Getpid()}}}}
	return p.stat(0)
}
