package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Execer runs a program given as argv (no shell), writing its combined
// stdout and stderr to out, and returns its exit code. When ctx ends it must
// kill the program and return. err reports a program that could not be
// started or did not exit on its own.
type Execer func(ctx context.Context, argv []string, out io.Writer) (exitCode int, err error)

// killGrace is how long ExecCommand waits for the pipes to close after the
// kill, in case an orphaned grandchild holds them.
const killGrace = time.Second

// ExecCommand is the Execer of os/exec. On timeout it kills the program's
// whole process group, so `sh -c 'sleep 60'` does not leave the sleep
// running.
func ExecCommand(ctx context.Context, argv []string, out io.Writer) (int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = killGrace
	setProcessGroup(cmd)
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, ctx.Err()
	case errors.As(err, &exitErr):
		return exitErr.ExitCode(), nil
	case err != nil:
		return -1, err
	}
	return 0, nil
}

// execChecker passes on exit status 0, warns on 1 and is critical otherwise,
// Nagios plugin style. Its output is the end of what the program wrote.
type execChecker struct {
	args []string
	exec Execer
	max  int
}

func (c execChecker) Check(ctx context.Context) Result {
	out := &lockedTail{b: tailBuffer{limit: c.max}}
	code, err := c.exec(ctx, c.args, out)
	output := out.String()
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		r := timeoutResult("exec "+strings.Join(c.args, " ")+": killed", ctx)
		return Result{Critical, truncate(joinOutput(r.Output, output), c.max)}
	case err != nil:
		return Result{Critical, truncate(joinOutput(fmt.Sprintf("exec %s: %v", c.args[0], err), output), c.max)}
	case code == 0:
		return Result{Passing, output}
	case code == 1:
		return Result{Warning, output}
	}
	return Result{Critical, output}
}

func joinOutput(msg, output string) string {
	if output == "" {
		return msg
	}
	return msg + "\n" + output
}

// lockedTail guards a tailBuffer: an Execer may write from goroutines of its
// own, and the checker reads after it returns.
type lockedTail struct {
	mu sync.Mutex
	b  tailBuffer
}

func (l *lockedTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
