package filter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
)

func compiler(t *testing.T, l Limits) *Compiler {
	t.Helper()
	c, err := NewCompiler(l)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func memberFailed() delivery.Event {
	return delivery.Event{
		ID:       "0190f5a2-0001",
		Revision: 42,
		Type:     "member.failed",
		Hook:     delivery.HookModify,
		URI:      "/members/web-1",
		Source:   "cp-1",
		Time:     time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Payload:  []byte(`{"name":"web-1","roles":["host"],"incarnation":3,"load":0.5,"note":null}`),
		TTL:      delivery.TTL{MaxHops: 4, Hops: 1, ExpiresAt: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)},
	}
}

func TestMatch(t *testing.T) {
	c := compiler(t, Limits{})
	binary := memberFailed()
	binary.Payload = []byte{0xff, 0xfe}
	text := memberFailed()
	text.Payload = []byte("web-1 went away")
	empty := memberFailed()
	empty.Payload = nil
	for _, tc := range []struct {
		expr string
		ev   delivery.Event
		want bool
	}{
		{`type == "member.failed"`, memberFailed(), true},
		{`type == "member.alive"`, memberFailed(), false},
		{`event.type == "member.failed" && event.revision == 42`, memberFailed(), true},
		{`uri.startsWith("/members/web-") && hook == "modify"`, memberFailed(), true},
		{`uri.matches("^/members/db-")`, memberFailed(), false},
		{`source in ["cp-1", "cp-2"] && id.size() > 0`, memberFailed(), true},
		{`revision > 40 && revision < 50`, memberFailed(), true},
		{`payload.name == "web-1" && "host" in payload.roles`, memberFailed(), true},
		{`payload.incarnation == 3 && payload.load < 1.0`, memberFailed(), true},
		{`payload.note == null`, memberFailed(), true},
		{`has(payload.zone)`, memberFailed(), false},
		{`time > timestamp("2026-01-01T00:00:00Z")`, memberFailed(), true},
		{`ttl.hops < ttl.max_hops && ttl.expires_at > time`, memberFailed(), true},
		{`payload == b"\xff\xfe"`, binary, true},
		{`payload.contains("went away")`, text, true},
		{`payload == null`, empty, true},
		{`!has(event.ttl.expires_at)`, delivery.Event{}, true},
	} {
		f, err := c.Compile(tc.expr)
		if err != nil {
			t.Errorf("Compile(%q): %v", tc.expr, err)
			continue
		}
		got, err := f.Match(context.Background(), tc.ev)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %v, %v; want %v", tc.expr, got, err, tc.want)
		}
	}
}

func TestCompileErrorsCarryPosition(t *testing.T) {
	c := compiler(t, Limits{})
	for _, tc := range []struct {
		expr     string
		line     int
		column   int
		contains string
	}{
		{`type == `, 1, 9, "Syntax error"},
		{"type == \"member.failed\" &&\n  uri.startsWith(", 2, 18, "Syntax error"},
		{`revision == "42"`, 1, 10, "no matching overload"},
		{`typo == "x"`, 1, 1, "undeclared reference"},
		{`uri.startsWith(1)`, 1, 15, "no matching overload"},
	} {
		_, err := c.Compile(tc.expr)
		var ce *CompileError
		if !errors.As(err, &ce) || len(ce.Issues) == 0 {
			t.Errorf("Compile(%q) = %v, want a CompileError", tc.expr, err)
			continue
		}
		is := ce.Issues[0]
		if is.Line != tc.line || is.Column != tc.column || !strings.Contains(is.Message, tc.contains) {
			t.Errorf("Compile(%q): issue %+v, want %d:%d %q", tc.expr, is, tc.line, tc.column, tc.contains)
		}
		if want := fmt.Sprintf("%d:%d: ", tc.line, tc.column); !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name the position %s", err, want)
		}
	}
}

func TestNonBoolRejected(t *testing.T) {
	c := compiler(t, Limits{})
	for _, expr := range []string{`revision + 1`, `"yes"`, `uri`, `[true]`, `payload.name`, `   `, ``} {
		if expr == `payload.name` {
			continue // dyn: can only be judged when run (below)
		}
		_, err := c.Compile(expr)
		var ce *CompileError
		if !errors.As(err, &ce) {
			t.Errorf("Compile(%q) = %v, want a CompileError", expr, err)
		}
	}
	f, err := c.Compile(`payload.name`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Match(context.Background(), memberFailed()); err == nil || !strings.Contains(err.Error(), "not bool") {
		t.Errorf("dyn expression giving a string: %v, want an error", err)
	}
}

func TestTooLongRejected(t *testing.T) {
	c := compiler(t, Limits{MaxLength: 64})
	_, err := c.Compile(`type == "` + strings.Repeat("x", 64) + `"`)
	var ce *CompileError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "limit of 64") {
		t.Fatalf("err %v", err)
	}
}

// items is an event whose payload holds n numbers.
func items(n int) delivery.Event {
	ev := memberFailed()
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, i)
	}
	b.WriteString(`]}`)
	ev.Payload = []byte(b.String())
	return ev
}

const quadratic = `payload.items.all(x, payload.items.all(y, x + y >= 0))`

func TestCostLimitFailsThatEvaluationOnly(t *testing.T) {
	c := compiler(t, Limits{Cost: 10_000, Timeout: 10 * time.Second})
	f, err := c.Compile(quadratic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Match(context.Background(), items(1000)); !errors.Is(err, ErrCostExceeded) {
		t.Fatalf("1000 items: %v, want ErrCostExceeded", err)
	}
	// The same filter still works on an event within the limit.
	if ok, err := f.Match(context.Background(), items(10)); err != nil || !ok {
		t.Fatalf("10 items: %v, %v", ok, err)
	}
}

func TestTimeoutFailsThatEvaluationOnly(t *testing.T) {
	c := compiler(t, Limits{Cost: 1 << 62, Timeout: 20 * time.Millisecond})
	f, err := c.Compile(quadratic)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := f.Match(context.Background(), items(5000)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("5000 items: %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("interrupted only after %v", took)
	}
	if ok, err := f.Match(context.Background(), items(3)); err != nil || !ok {
		t.Fatalf("3 items: %v, %v", ok, err)
	}
}

func TestConcurrentMatch(t *testing.T) {
	f, err := compiler(t, Limits{}).Compile(`payload.name == "web-1" && type == "member.failed"`)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if ok, err := f.Match(context.Background(), memberFailed()); !ok || err != nil {
					t.Errorf("Match: %v, %v", ok, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
