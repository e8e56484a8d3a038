// Package buildinfo carries the version and build details that the linker
// stamps into every hivemind binary (see the Makefile's LDFLAGS).
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/hivemind/hivemind/pkg/buildinfo.Version=…".
var (
	Version = "dev"
	Commit  = ""
	Time    = ""
)

// Info is what a binary knows about how it was built.
type Info struct {
	Version   string
	Commit    string
	Time      string
	GoVersion string
}

// Get returns the build details, falling back to the VCS stamp the Go
// toolchain records when the linker flags were not given.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, Time: Time, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.time":
				if info.Time == "" {
					info.Time = s.Value
				}
			}
		}
	}
	return info
}
