package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func noEnv(string) (string, bool) { return "", false }

// run runs hivectl in-process with no environment and returns its exit
// code, standard output and standard error.
func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := Run(context.Background(), args, strings.NewReader(""), &out, &errb, lookup)
	return code, out.String(), errb.String()
}

// TestEveryCommandHasAnExample walks the whole command tree: every command
// a user can reach has an Example, and its --help shows it.
func TestEveryCommandHasAnExample(t *testing.T) {
	root := newRoot(&globals{}, noEnv)
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
		// cobra's own completion commands come with their own long help.
		if strings.HasPrefix(c.CommandPath(), "hivectl completion") {
			return
		}
		n++
		path := strings.Fields(c.CommandPath())[1:]
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no Example", c.CommandPath())
			return
		}
		code, out, _ := run(t, nil, append(path, "--help")...)
		if code != ExitOK {
			t.Errorf("%s --help exited %d", c.CommandPath(), code)
		}
		if !strings.Contains(out, "Examples:") || !strings.Contains(out, strings.TrimSpace(strings.Split(c.Example, "\n")[0])) {
			t.Errorf("%s --help does not show its example:\n%s", c.CommandPath(), out)
		}
	}
	walk(root)
	if n < 30 {
		t.Fatalf("walked %d commands; the tree is smaller than it should be", n)
	}
}

// TestUsageErrors: a wrong call exits 2 with one line naming the problem,
// before any connection is tried.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get"}, "missing argument KEY"},
		{[]string{"announce", "web"}, "missing argument INSTANCE ADDRESS"},
		{[]string{"get", "/a", "/b"}, "too many arguments"},
		{[]string{"get", "--bogus", "/a"}, "unknown flag: --bogus"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"get", "/a", "-o", "xml"}, `--output "xml": want table, json or yaml`},
		{[]string{"compact", "ten"}, `REVISION "ten": want a positive integer`},
		{[]string{"events", "append", "t", "/u", "--hook", "sideways"}, `--hook "sideways"`},
		{[]string{"announce", "web", "w1", "10.0.0.1:80", "--meta", "novalue"}, `--meta "novalue": want key=value`},
		{[]string{"intents", "release", "/k"}, "missing --holder"},
		{[]string{"put", "/k", "v", "--file", "x"}, "not both"},
		{[]string{"get", "/a", "--endpoints", "nohostport"}, `"nohostport" is not host:port`},
	} {
		code, out, errs := run(t, nil, tc.args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, code, ExitUsage, errs)
		}
		if !strings.Contains(errs, tc.want) {
			t.Errorf("%v: stderr %q does not say %q", tc.args, errs, tc.want)
		}
		if strings.Count(strings.TrimSpace(errs), "\n") != 0 || out != "" {
			t.Errorf("%v: want one line on stderr and nothing on stdout, got %q / %q", tc.args, errs, out)
		}
	}
}

func TestTxnParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`{"compares":[`, "transaction JSON"},
		{`val(/k) = "v"`, "transaction line 1: compare"},
		{"ver(\"/k\") = \"x\"\n", `ver needs a number`},
		{"\nput /k\n", "transaction line 2: operation"},
		{"\nput /k \"unterminated\n", "transaction line 2"},
		{"", "empty"},
		{"\n\n\n", "third blank line"},
	} {
		_, err := parseTxn([]byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseTxn(%q) = %v, want an error saying %q", tc.src, err, tc.want)
		}
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, errs := run(t, nil, "completion", sh)
		if code != ExitOK || !strings.Contains(out, "hivectl") {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", sh, code, len(out), errs)
		}
	}
}

func TestEnvironmentFillsFlags(t *testing.T) {
	code, _, errs := run(t, map[string]string{"HIVEMIND_OUTPUT": "xml"}, "get", "/a")
	if code != ExitUsage || !strings.Contains(errs, `--output "xml"`) {
		t.Fatalf("HIVEMIND_OUTPUT=xml: exit %d, stderr %q", code, errs)
	}
	code, _, errs = run(t, map[string]string{"HIVEMIND_TIMEOUT": "soon"}, "get", "/a")
	if code != ExitUsage || !strings.Contains(errs, `HIVEMIND_TIMEOUT="soon"`) {
		t.Fatalf("HIVEMIND_TIMEOUT=soon: exit %d, stderr %q", code, errs)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		rev  int64
		at   time.Time
		fail bool
	}{
		{"", 0, time.Time{}, false},
		{"42", 42, time.Time{}, false},
		{"90m", 0, now.Add(-90 * time.Minute), false},
		{"2026-04-30T10:00:00Z", 0, time.Date(2026, 4, 30, 10, 0, 0, 0, time.UTC), false},
		{"0", 0, time.Time{}, true},
		{"-5m", 0, time.Time{}, true},
		{"yesterday", 0, time.Time{}, true},
	} {
		rev, at, err := parseSince(tc.in, now)
		if (err != nil) != tc.fail || rev != tc.rev || !at.Equal(tc.at) {
			t.Errorf("parseSince(%q) = %d, %v, %v; want %d, %v, fail %v", tc.in, rev, at, err, tc.rev, tc.at, tc.fail)
		}
	}
}
