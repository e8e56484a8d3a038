package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

func txnCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "txn [--file FILE]",
		Short: "Compare, then apply the success or the failure operations atomically",
		Long: `Run a transaction read from --file, or from standard input (with prompts
when it is a terminal). Two forms are accepted.

As etcdctl reads it: the compares, a blank line, the success operations, a
blank line, the failure operations. A compare is
  val("KEY") = "VALUE"   ver("KEY") > "1"   create("KEY") = "0"   mod("KEY") < "42"
with =, !=, > or <; an operation is
  put KEY VALUE    get KEY    del KEY    del --prefix PREFIX
where a key or value with spaces is written as a Go quoted string.

Or the TxnRequest as JSON, as grpcurl takes it (values base64):
  {"compares":[…],"success":[{"put":{"key":"/k","value":"djI="}}],"failure":[…]}

All operations of a transaction share one revision. It exits with 0 whether
the success or the failure branch ran; the output says which.`,
		Example: `  printf 'ver("/app/web/config") = "1"\n\nput /app/web/config v2\n\nget /app/web/config\n' | hivectl txn
  hivectl txn --file promote.txn -o json`,
		Args: exactArgs(),
		RunE: g.run(func(cmd *cobra.Command, _ []string) error {
			var in io.Reader = g.stdin
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("--file: %v", err)
				}
				defer f.Close()
				in = f
			} else if isTerminal(g.stdin) {
				fmt.Fprintln(g.stderr, "compares, then a blank line, success operations, a blank line, failure operations; end with Ctrl-D:")
			}
			src, err := io.ReadAll(in)
			if err != nil {
				return usagef("reading the transaction: %v", err)
			}
			req, err := parseTxn(src)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			cp, err := cl.controlPlane(ctx)
			if err != nil {
				return err
			}
			resp, err := cp.Txn(ctx, req)
			if err != nil {
				return err
			}
			ops := req.GetSuccess()
			if !resp.GetSucceeded() {
				ops = req.GetFailure()
			}
			type resultOut struct {
				Op      string `json:"op"`
				Key     string `json:"key"`
				KV      *kvOut `json:"kv,omitempty"`
				Deleted int64  `json:"deleted,omitempty"`
			}
			results := []*resultOut{}
			for i, r := range resp.GetResults() {
				o := &resultOut{KV: toKV(r.GetKv()), Deleted: r.GetDeleted()}
				if i < len(ops) {
					o.Op, o.Key = opName(ops[i])
				}
				results = append(results, o)
			}
			return g.print(struct {
				Header    headerOut    `json:"header"`
				Succeeded bool         `json:"succeeded"`
				Results   []*resultOut `json:"results"`
			}{toHeader(resp.GetHeader()), resp.GetSucceeded(), results}, func(w io.Writer) {
				branch := "SUCCESS"
				if !resp.GetSucceeded() {
					branch = "FAILURE"
				}
				row(w, fmt.Sprintf("%s, revision %d", branch, resp.GetHeader().GetRevision()))
				row(w, "OP", "KEY", "VALUE", "MOD_REV", "DELETED")
				for _, r := range results {
					val, mod := "-", "-"
					if r.KV != nil {
						val = "base64:" + r.KV.ValueBase64
						if r.KV.Value != nil {
							val = cell([]byte(*r.KV.Value))
						}
						mod = strconv.FormatInt(r.KV.ModRevision, 10)
					} else if r.Op == "get" {
						val = "(missing)"
					}
					deleted := "-"
					if strings.HasPrefix(r.Op, "del") {
						deleted = strconv.FormatInt(r.Deleted, 10)
					}
					row(w, r.Op, r.Key, val, mod, deleted)
				}
			})
		}),
	}
	cmd.Flags().StringVar(&file, "file", "", "read the transaction from this file (default: standard input)")
	return cmd
}

func opName(op *hivemindv1.TxnOp) (string, string) {
	switch o := op.GetOp().(type) {
	case *hivemindv1.TxnOp_Put:
		return "put", o.Put.GetKey()
	case *hivemindv1.TxnOp_Get:
		return "get", o.Get.GetKey()
	case *hivemindv1.TxnOp_Delete:
		if o.Delete.GetPrefix() {
			return "del --prefix", o.Delete.GetKey()
		}
		return "del", o.Delete.GetKey()
	}
	return "?", ""
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// parseTxn reads a transaction in either form (see txn --help).
func parseTxn(src []byte) (*hivemindv1.TxnRequest, error) {
	if t := bytes.TrimSpace(src); len(t) > 0 && t[0] == '{' {
		req := &hivemindv1.TxnRequest{}
		if err := protojson.Unmarshal(t, req); err != nil {
			return nil, usagef("transaction JSON: %v", err)
		}
		return req, nil
	}
	req := &hivemindv1.TxnRequest{}
	section := 0
	sc := bufio.NewScanner(bytes.NewReader(src))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if line == "" {
			section++
			if section > 2 {
				return nil, usagef("transaction line %d: a third blank line; there are only compares, success and failure", n)
			}
			continue
		}
		if section == 0 {
			c, err := parseCompare(line)
			if err != nil {
				return nil, usagef("transaction line %d: %v", n, err)
			}
			req.Compares = append(req.Compares, c)
			continue
		}
		op, err := parseOp(line)
		if err != nil {
			return nil, usagef("transaction line %d: %v", n, err)
		}
		if section == 1 {
			req.Success = append(req.Success, op)
		} else {
			req.Failure = append(req.Failure, op)
		}
	}
	if len(req.GetCompares()) == 0 && len(req.GetSuccess()) == 0 && len(req.GetFailure()) == 0 {
		return nil, usagef("the transaction is empty")
	}
	return req, nil
}

var compareRe = regexp.MustCompile(`^(val|value|ver|version|create|mod)\((".*")\)\s*(==|=|!=|>|<)\s*(".*")$`)

func parseCompare(line string) (*hivemindv1.Compare, error) {
	m := compareRe.FindStringSubmatch(line)
	if m == nil {
		return nil, fmt.Errorf(`compare %q: want TARGET("KEY") OP "VALUE", TARGET one of val, ver, create, mod and OP one of =, !=, >, <`, line)
	}
	key, err := strconv.Unquote(m[2])
	if err != nil {
		return nil, fmt.Errorf("compare key %s: %v", m[2], err)
	}
	val, err := strconv.Unquote(m[4])
	if err != nil {
		return nil, fmt.Errorf("compare value %s: %v", m[4], err)
	}
	c := &hivemindv1.Compare{Key: key}
	switch m[3] {
	case "=", "==":
		c.Result = hivemindv1.Compare_RESULT_EQUAL
	case "!=":
		c.Result = hivemindv1.Compare_RESULT_NOT_EQUAL
	case ">":
		c.Result = hivemindv1.Compare_RESULT_GREATER
	case "<":
		c.Result = hivemindv1.Compare_RESULT_LESS
	}
	switch m[1] {
	case "val", "value":
		c.Target = hivemindv1.Compare_TARGET_VALUE
		c.Value = []byte(val)
		return c, nil
	case "ver", "version":
		c.Target = hivemindv1.Compare_TARGET_VERSION
	case "create":
		c.Target = hivemindv1.Compare_TARGET_CREATE_REVISION
	case "mod":
		c.Target = hivemindv1.Compare_TARGET_MOD_REVISION
	}
	num, err := strconv.ParseInt(val, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("compare %q: %s needs a number, not %q", line, m[1], val)
	}
	c.Number = num
	return c, nil
}

func parseOp(line string) (*hivemindv1.TxnOp, error) {
	f, err := fields(line)
	if err != nil {
		return nil, err
	}
	switch {
	case len(f) == 3 && f[0] == "put":
		return &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: f[1], Value: []byte(f[2])}}}, nil
	case len(f) == 2 && f[0] == "get":
		return &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Get{Get: &hivemindv1.TxnGet{Key: f[1]}}}, nil
	case len(f) == 2 && (f[0] == "del" || f[0] == "delete"):
		return &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: f[1]}}}, nil
	case len(f) == 3 && (f[0] == "del" || f[0] == "delete") && f[1] == "--prefix":
		return &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: f[2], Prefix: true}}}, nil
	}
	return nil, fmt.Errorf("operation %q: want put KEY VALUE, get KEY, del KEY or del --prefix PREFIX", line)
}

// fields splits a line at spaces; a field may be a Go quoted string.
func fields(line string) ([]string, error) {
	var out []string
	rest := strings.TrimSpace(line)
	for rest != "" {
		if rest[0] == '"' {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("unterminated or bad quoted string in %q", line)
			}
			s, _ := strconv.Unquote(q)
			out = append(out, s)
			rest = strings.TrimSpace(rest[len(q):])
			continue
		}
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			out = append(out, rest)
			break
		}
		out = append(out, rest[:i])
		rest = strings.TrimSpace(rest[i:])
	}
	return out, nil
}
