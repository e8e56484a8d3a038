package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/hivemind/hivemind/pkg/gossip"
)

// membershipPreset is a named gossip configuration under test.
type membershipPreset struct {
	system string
	config func(name string) gossip.Config
	note   string
}

var membershipPresets = []membershipPreset{
	{"hivemind", gossip.FastLANConfig, "gossip.FastLANConfig"},
	{"memberlist-lan", gossip.DefaultLANConfig, "memberlist DefaultLANConfig (probe 1s, suspicion mult 4)"},
}

// benchMembership measures failure detection per preset, idle and with
// two busy-loop processes saturating the CPUs (registryDetection).
func benchMembership(dir, binDir string, n, runs int, systems map[string]bool) ([]result, error) {
	var out []result
	for _, p := range membershipPresets {
		if len(systems) > 0 && !systems[p.system] {
			continue
		}
		for _, loaded := range []bool{false, true} {
			r, err := registryDetection(filepath.Join(dir, fmt.Sprintf("%s-%v", p.system, loaded)), binDir, p, n, runs, loaded)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.system, err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// burnCPU starts k busy-loop processes and returns what stops them.
func burnCPU(k int) (func(), error) {
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		}
	}
	for range k {
		c := exec.Command("sh", "-c", "while :; do :; done")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			stop()
			return nil, err
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}
