// Package filter runs a subscription's filter expression, written in CEL
// (https://cel.dev), over an event.
//
// An expression is compiled once, when the subscription is created, so a
// syntax or type error is reported to whoever wrote it, with its position;
// and every evaluation is bounded in cost and time, because the expression
// comes from a user and runs on the notifier's CPU.
//
// The expression sees these variables:
//
//	id        string     the event id
//	revision  int        the revision that committed it
//	type      string     for example "member.failed", "kv.put"
//	hook      string     "create", "modify", "delete" or "query"
//	uri       string     the resource path
//	source    string     the node that caused it
//	time      timestamp  when it happened
//	payload   dyn        the payload decoded when it is JSON; otherwise a
//	                     string if it is UTF-8, else bytes; null if empty
//	ttl       map        max_hops (int), hops (int), expires_at (timestamp,
//	                     absent when the event does not expire)
//	event     map        all of the above under the same names, for those
//	                     who prefer event.type to type
//
// For example: type == "member.failed" && uri.startsWith("/members/web-").
package filter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
)

// Limits bound what an expression may cost. Zero fields take the defaults
// of DefaultLimits.
type Limits struct {
	// MaxLength bounds the expression's length in characters.
	MaxLength int
	// Cost bounds one evaluation in CEL cost units (about one per
	// operation, more for string and list work).
	Cost uint64
	// Timeout bounds one evaluation's wall-clock time.
	Timeout time.Duration
}

// DefaultLimits are the limits a notifier runs with unless configured.
func DefaultLimits() Limits {
	return Limits{MaxLength: 4096, Cost: 100_000, Timeout: 100 * time.Millisecond}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxLength <= 0 {
		l.MaxLength = d.MaxLength
	}
	if l.Cost == 0 {
		l.Cost = d.Cost
	}
	if l.Timeout <= 0 {
		l.Timeout = d.Timeout
	}
	return l
}

// Issue is one problem in an expression, at a 1-based line and column
// (0 when CEL gives no position).
type Issue struct {
	Line, Column int
	Message      string
}

func (i Issue) String() string {
	if i.Line == 0 {
		return i.Message
	}
	return fmt.Sprintf("%d:%d: %s", i.Line, i.Column, i.Message)
}

// CompileError is returned for an expression that cannot be used: it fails
// to parse or type-check, does not give a bool, or is too long. The API
// answers it with INVALID_ARGUMENT.
type CompileError struct {
	Issues []Issue
}

func (e *CompileError) Error() string {
	parts := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		parts[i] = is.String()
	}
	return "filter: " + strings.Join(parts, "; ")
}

// ErrCostExceeded is wrapped by an evaluation that ran past Limits.Cost.
var ErrCostExceeded = errors.New("filter cost limit exceeded")

// ErrTimeout is wrapped by an evaluation that ran past Limits.Timeout.
var ErrTimeout = errors.New("filter evaluation timed out")

// Compiler compiles expressions. Build one per notifier; it is safe for
// concurrent use.
type Compiler struct {
	env    *cel.Env
	limits Limits
}

// NewCompiler returns a Compiler whose filters run within limits.
func NewCompiler(limits Limits) (*Compiler, error) {
	limits = limits.withDefaults()
	env, err := cel.NewEnv(
		cel.Variable("id", cel.StringType),
		cel.Variable("revision", cel.IntType),
		cel.Variable("type", cel.StringType),
		cel.Variable("hook", cel.StringType),
		cel.Variable("uri", cel.StringType),
		cel.Variable("source", cel.StringType),
		cel.Variable("time", cel.TimestampType),
		cel.Variable("payload", cel.DynType),
		cel.Variable("ttl", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)),
		cel.ParserExpressionSizeLimit(limits.MaxLength),
		cel.ParserRecursionLimit(100),
	)
	if err != nil {
		return nil, fmt.Errorf("filter environment: %w", err)
	}
	return &Compiler{env: env, limits: limits}, nil
}

// Filter is a compiled expression. It is safe for concurrent use.
type Filter struct {
	expr    string
	program cel.Program
	timeout time.Duration
}

// Compile checks expr and prepares it to run. An unusable expression gives
// a *CompileError.
func (c *Compiler) Compile(expr string) (*Filter, error) {
	if n := utf8.RuneCountInString(expr); n > c.limits.MaxLength {
		return nil, &CompileError{Issues: []Issue{{Message: fmt.Sprintf("expression is %d characters long, more than the limit of %d", n, c.limits.MaxLength)}}}
	}
	if strings.TrimSpace(expr) == "" {
		return nil, &CompileError{Issues: []Issue{{Message: "expression is empty"}}}
	}
	ast, iss := c.env.Compile(expr)
	if iss.Err() != nil {
		ce := &CompileError{}
		for _, e := range iss.Errors() {
			is := Issue{Message: e.Message}
			if loc := e.Location; loc != nil && loc.Line() > 0 {
				is.Line, is.Column = loc.Line(), loc.Column()+1
			}
			ce.Issues = append(ce.Issues, is)
		}
		return nil, ce
	}
	if t := ast.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
		return nil, &CompileError{Issues: []Issue{{Line: 1, Column: 1, Message: fmt.Sprintf("expression gives %s, must give bool", t)}}}
	}
	prg, err := c.env.Program(ast,
		cel.CostLimit(c.limits.Cost),
		cel.InterruptCheckFrequency(100),
	)
	if err != nil {
		return nil, &CompileError{Issues: []Issue{{Message: err.Error()}}}
	}
	return &Filter{expr: expr, program: prg, timeout: c.limits.Timeout}, nil
}

// String returns the expression's source.
func (f *Filter) String() string { return f.expr }

// Match evaluates the filter over ev. An error (a cost or time limit, a
// missing payload field, a result that is not a bool) concerns this
// evaluation only: the caller records it as the delivery's failure.
func (f *Filter) Match(ctx context.Context, ev delivery.Event) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	out, _, err := f.program.ContextEval(ctx, activation(ev))
	if err != nil {
		var ce interpreter.EvalCancelledError
		switch {
		case errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded,
			strings.Contains(err.Error(), "cost limit exceeded"):
			return false, fmt.Errorf("%w: %v", ErrCostExceeded, err)
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
			return false, fmt.Errorf("%w after %v: %v", ErrTimeout, f.timeout, err)
		}
		return false, fmt.Errorf("filter: %w", err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("filter: expression gave %s, not bool", out.Type())
	}
	return b, nil
}

// activation is the variables an expression sees for ev.
func activation(ev delivery.Event) map[string]any {
	ttl := map[string]any{
		"max_hops": int64(ev.TTL.MaxHops),
		"hops":     int64(ev.TTL.Hops),
	}
	if !ev.TTL.ExpiresAt.IsZero() {
		ttl["expires_at"] = ev.TTL.ExpiresAt
	}
	vars := map[string]any{
		"id":       ev.ID,
		"revision": ev.Revision,
		"type":     ev.Type,
		"hook":     string(ev.Hook),
		"uri":      ev.URI,
		"source":   ev.Source,
		"time":     ev.Time,
		"payload":  payload(ev.Payload),
		"ttl":      ttl,
	}
	event := make(map[string]any, len(vars))
	for k, v := range vars {
		event[k] = v
	}
	vars["event"] = event
	return vars
}

// payload decodes a payload for CEL: JSON numbers that are whole become
// int, so payload.count == 3 reads as written.
func payload(p []byte) any {
	if len(p) == 0 {
		return types.NullValue
	}
	if json.Valid(p) {
		d := json.NewDecoder(strings.NewReader(string(p)))
		d.UseNumber()
		var v any
		if d.Decode(&v) == nil {
			return numbers(v)
		}
	}
	if utf8.Valid(p) {
		return string(p)
	}
	return p
}

func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case nil:
		return types.NullValue
	}
	return v
}
