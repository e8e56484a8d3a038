package ping

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/buildinfo"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Built-in probes.
const (
	ProbeVersion = "version"
	ProbeLoad    = "load"
	ProbeDisk    = "disk"
	ProbeTime    = "time"
)

var builtins = []string{ProbeDisk, ProbeLoad, ProbeTime, ProbeVersion}

func builtin(name string) bool { return slices.Contains(builtins, name) }

// Limits of exec probes.
const (
	// ExecTimeout bounds an exec probe when the call has no earlier deadline.
	ExecTimeout = 10 * time.Second
	// MaxExecOutput is how much of stdout and of stderr is kept.
	MaxExecOutput = 64 << 10
	maxArgs       = 16
	maxArgValue   = 1024
)

// loadavgPath is read by the load probe; a variable for tests.
var loadavgPath = "/proc/loadavg"

var argName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Probe implements hivemindv1.NodeServer: it runs a named probe here.
func (s *Service) Probe(ctx context.Context, req *hivemindv1.NodeProbeRequest) (*hivemindv1.NodeProbeResponse, error) {
	var data map[string]any
	var err error
	switch name := req.GetName(); name {
	case "":
		return nil, invalid("name: required")
	case ProbeVersion:
		b := buildinfo.Get()
		data = map[string]any{"role": s.cfg.Role, "version": b.Version, "commit": b.Commit, "go_version": b.GoVersion, "build_time": b.Time}
	case ProbeLoad:
		data, err = readLoad(loadavgPath)
	case ProbeDisk:
		data, err = diskUsage(s.cfg.DataDir)
	case ProbeTime:
		now := s.cfg.Now()
		data = map[string]any{"time": now.UTC().Format(time.RFC3339Nano), "unix_seconds": float64(now.UnixMicro()) / 1e6}
	default:
		s.mu.Lock()
		argv, ok := s.exec[name]
		names := make([]string, 0, len(s.exec))
		for n := range s.exec {
			names = append(names, n)
		}
		s.mu.Unlock()
		if !ok {
			sort.Strings(names)
			return nil, status.Errorf(codes.NotFound, "name: no probe %q on %s (built in: %s; exec: %s)",
				name, s.cfg.Name, strings.Join(builtins, ", "), strings.Join(names, ", "))
		}
		if err := auth.Require(ctx, auth.ScopeAdmin); err != nil {
			return nil, err
		}
		if err := checkArgs(req.GetArgs()); err != nil {
			return nil, err
		}
		data, err = runExec(ctx, argv, req.GetArgs())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "probe %s: %v", req.GetName(), err)
	}
	st, err := structpb.NewStruct(data)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "probe %s: %v", req.GetName(), err)
	}
	return &hivemindv1.NodeProbeResponse{NodeName: s.cfg.Name, Probe: req.GetName(), Data: st}, nil
}

func checkArgs(args map[string]string) error {
	if len(args) > maxArgs {
		return invalid("args: at most %d, got %d", maxArgs, len(args))
	}
	for k, v := range args {
		if !argName.MatchString(k) {
			return invalid("args: name %q must be lower case letters, digits and _, starting with a letter, at most 32", k)
		}
		if len(v) > maxArgValue {
			return invalid("args[%s]: at most %d bytes", k, maxArgValue)
		}
	}
	return nil
}

// readLoad reads the load averages and process counts of /proc/loadavg.
func readLoad(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return nil, fmt.Errorf("%s: unexpected %q", path, b)
	}
	out := map[string]any{}
	for i, k := range []string{"load1", "load5", "load15"} {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, k, err)
		}
		out[k] = v
	}
	if run, total, ok := strings.Cut(f[3], "/"); ok {
		r, err1 := strconv.Atoi(run)
		t, err2 := strconv.Atoi(total)
		if err1 == nil && err2 == nil {
			out["running"], out["processes"] = float64(r), float64(t)
		}
	}
	return out, nil
}

// diskUsage reports the file system holding dir.
func diskUsage(dir string) (map[string]any, error) {
	if dir == "" {
		return nil, errors.New("no data directory configured")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil, err
	}
	bs := uint64(st.Bsize)
	total, free, avail := uint64(st.Blocks)*bs, uint64(st.Bfree)*bs, uint64(st.Bavail)*bs
	out := map[string]any{
		"path": dir, "total_bytes": float64(total), "free_bytes": float64(free), "available_bytes": float64(avail),
		"inodes": float64(st.Files), "free_inodes": float64(st.Ffree),
	}
	if total > 0 {
		out["used_fraction"] = float64(total-free) / float64(total)
	}
	return out, nil
}

// runExec runs argv with the call's args as HIVEMIND_PROBE_<NAME>
// variables (never as arguments, so a caller cannot change what runs).
// A stdout that is a JSON object is returned as structured data.
func runExec(ctx context.Context, argv []string, args map[string]string) (map[string]any, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty argv")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ExecTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "HIVEMIND_PROBE=1")
	for k, v := range args {
		cmd.Env = append(cmd.Env, "HIVEMIND_PROBE_"+strings.ToUpper(k)+"="+v)
	}
	stdout, stderr := &capped{max: MaxExecOutput}, &capped{max: MaxExecOutput}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	err := cmd.Run()
	out := map[string]any{"argv": toAny(argv), "duration_seconds": time.Since(start).Seconds(), "exit_code": float64(cmd.ProcessState.ExitCode())}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		if cmd.ProcessState == nil {
			return nil, err
		}
		out["error"] = err.Error()
	}
	if ctx.Err() != nil {
		out["error"] = "killed: " + ctx.Err().Error()
	}
	var obj map[string]any
	if json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &obj) == nil {
		out["output"] = obj
	} else {
		out["stdout"] = stdout.String()
	}
	if stderr.Len() > 0 {
		out["stderr"] = stderr.String()
	}
	if stdout.cut || stderr.cut {
		out["truncated"] = true
	}
	return out, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	bytes.Buffer
	max int
	cut bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room < len(p) {
		c.cut = true
		c.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return c.Buffer.Write(p)
}
