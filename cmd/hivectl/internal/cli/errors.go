package cli

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// runError is a failure with its exit code and the one line to print.
type runError struct {
	code int
	msg  string
}

func (e *runError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &runError{code: ExitUsage, msg: fmt.Sprintf(format, a...)}
}

func notFoundf(format string, a ...any) error {
	return &runError{code: ExitNotFound, msg: fmt.Sprintf(format, a...)}
}

// dialCause pulls the reason out of a gRPC transport error ("connection
// refused", "i/o timeout", a TLS failure) so that the line stays short.
var dialCause = regexp.MustCompile(`(?:dial tcp [^:]+:\d+: |transport: authentication handshake failed: )([^"]+)`)

// classify turns an error into one line and an exit code; gRPC statuses
// are named in words, never dumped.
func (g *globals) classify(err error) error {
	var re *runError
	if errors.As(err, &re) {
		return re
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &runError{code: ExitError, msg: fmt.Sprintf("no answer within --timeout %s", g.timeout)}
	}
	if errors.Is(err, context.Canceled) {
		return &runError{code: ExitError, msg: "interrupted"}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &runError{code: ExitError, msg: err.Error()}
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		if !strings.Contains(msg, "not found") {
			msg = "not found: " + msg
		}
		return &runError{code: ExitNotFound, msg: msg}
	case codes.Unavailable:
		if m := dialCause.FindStringSubmatch(msg); m != nil {
			msg = strings.TrimRight(m[1], `\`)
		}
		return &runError{code: ExitError, msg: fmt.Sprintf("unavailable (endpoints %s): %s", strings.Join(g.endpoints, ","), msg)}
	case codes.Unauthenticated:
		hint := ""
		if tok, _ := g.tokenValue(); tok == "" {
			hint = " (no token: set --token, --token-file or HIVEMIND_TOKEN)"
		}
		return &runError{code: ExitError, msg: "token refused: " + msg + hint}
	case codes.PermissionDenied:
		return &runError{code: ExitError, msg: "permission denied: " + msg}
	case codes.InvalidArgument:
		return &runError{code: ExitError, msg: "invalid argument: " + msg}
	case codes.DeadlineExceeded:
		return &runError{code: ExitError, msg: fmt.Sprintf("no answer within --timeout %s", g.timeout)}
	case codes.Canceled:
		return &runError{code: ExitError, msg: "interrupted"}
	case codes.OutOfRange:
		return &runError{code: ExitError, msg: "out of range: " + msg}
	default:
		return &runError{code: ExitError, msg: codeWords(st.Code()) + ": " + msg}
	}
}

// codeWords is a status code in words: FailedPrecondition → "failed precondition".
func codeWords(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToLower(b.String())
}
