// Package check runs a host's health checks the way Consul operators know
// them — TCP, HTTP, gRPC health, exec and TTL — and folds their results into
// one status per service.
//
// A check is a Definition; NewChecker turns every kind except TTL into a
// Checker that probes once. The Runner schedules all checks of all services
// on their intervals, holds TTL checks, and tells an Observer when a
// service's health changes.
package check

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Status is the state of a check or of a service. Greater is worse, so the
// status of a service is the maximum of its checks'.
type Status uint8

// Statuses, from best to worst. The zero value is not a status.
const (
	Passing Status = iota + 1
	Warning
	Critical
)

// String is the Consul spelling: "passing", "warning", "critical".
func (s Status) String() string {
	switch s {
	case Passing:
		return "passing"
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// ParseStatus reads "passing", "warning" or "critical" (any case).
func ParseStatus(s string) (Status, error) {
	switch strings.ToLower(s) {
	case "passing":
		return Passing, nil
	case "warning":
		return Warning, nil
	case "critical":
		return Critical, nil
	}
	return 0, fmt.Errorf("check: unknown status %q (want passing, warning or critical)", s)
}

// Valid reports whether s is one of the three statuses.
func (s Status) Valid() bool { return s >= Passing && s <= Critical }

// Worst is the worse of a and b.
func Worst(a, b Status) Status { return max(a, b) }

// Result is what one run of a check found.
type Result struct {
	Status Status
	// Output is what the check said, at most the runner's output limit.
	Output string
}

// Kind says how a check probes.
type Kind string

// Kinds of check.
const (
	KindTCP  Kind = "tcp"
	KindHTTP Kind = "http"
	KindGRPC Kind = "grpc"
	KindExec Kind = "exec"
	KindTTL  Kind = "ttl"
)

// Definition is one check of a service. Only the fields of its Kind are
// read.
type Definition struct {
	// ID names the check within its service (UpdateTTL addresses it).
	ID   string
	Name string
	Kind Kind

	// Interval between runs and Timeout of one run (not TTL).
	Interval time.Duration
	Timeout  time.Duration

	// TCP: host:port to connect to.
	TCP string

	// HTTP: URL, method (default GET), extra headers, and whether to accept
	// any TLS certificate.
	HTTP          string
	Method        string
	Header        http.Header
	TLSSkipVerify bool

	// GRPC: host:port of a server implementing grpc.health.v1, the service
	// name to ask about ("" is the server as a whole), and whether to use
	// TLS (TLSSkipVerify applies too).
	GRPC        string
	GRPCService string
	GRPCUseTLS  bool

	// Exec: the program and its arguments, run without a shell.
	Args []string

	// TTL: how long an Update holds before the check turns critical.
	TTL time.Duration
}

// Checker probes once. It must return when ctx ends.
type Checker interface {
	Check(ctx context.Context) Result
}

// ErrTTLHasNoChecker is returned by NewChecker for a TTL definition: a TTL
// check is not probed, it is told (Runner.UpdateTTL).
var ErrTTLHasNoChecker = errors.New("check: a TTL check has no prober")

// DefaultMaxOutput bounds the output a check keeps, like Consul's 4 KiB.
const DefaultMaxOutput = 4 << 10

// NewChecker builds the prober for d. exec runs exec checks (nil means
// ExecCommand); maxOutput bounds the output (<= 0 means DefaultMaxOutput).
func NewChecker(d Definition, exec Execer, maxOutput int) (Checker, error) {
	if maxOutput <= 0 {
		maxOutput = DefaultMaxOutput
	}
	switch d.Kind {
	case KindTCP:
		return tcpChecker{addr: d.TCP}, nil
	case KindHTTP:
		return newHTTPChecker(d, maxOutput), nil
	case KindGRPC:
		return newGRPCChecker(d), nil
	case KindExec:
		if len(d.Args) == 0 {
			return nil, errors.New("check: exec check without args")
		}
		if exec == nil {
			exec = ExecCommand
		}
		return execChecker{args: d.Args, exec: exec, max: maxOutput}, nil
	case KindTTL:
		return nil, ErrTTLHasNoChecker
	}
	return nil, fmt.Errorf("check: unknown kind %q", d.Kind)
}

// timeoutResult is the critical result of a probe whose deadline passed.
func timeoutResult(what string, ctx context.Context) Result {
	if dl, ok := ctx.Deadline(); ok {
		return Result{Critical, fmt.Sprintf("%s: timed out (deadline %s)", what, dl.Format(time.RFC3339Nano))}
	}
	return Result{Critical, what + ": timed out"}
}
