package cli

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

func checkOutput(o string) error {
	switch o {
	case "table", "json", "yaml":
		return nil
	}
	return usagef("--output %q: want table, json or yaml", o)
}

// print writes one answer: v as JSON (one line) or YAML, or the table
// that table writes.
func (g *globals) print(v any, table func(w io.Writer)) error {
	return render(g.stdout, g.output, v, table, false)
}

// printItem writes one element of a stream: a JSON line, a YAML document
// (with its --- separator) or table lines. Table lines share one writer,
// flushed after each item of a live stream (so it shows at once) and at
// the end of a history (so its columns line up).
func (g *globals) printItem(v any, table func(w io.Writer)) error {
	if g.output != "table" {
		return render(g.stdout, g.output, v, table, true)
	}
	table(g.streamTable())
	if g.live {
		return g.tw.Flush()
	}
	return nil
}

// streamTable is the table writer of a stream, made on first use.
func (g *globals) streamTable() io.Writer {
	if g.tw == nil {
		g.tw = newTable(g.stdout)
	}
	return g.tw
}

// streamHeader writes a stream's table header (nothing in JSON or YAML).
func (g *globals) streamHeader(cols ...any) {
	if g.output == "table" {
		row(g.streamTable(), cols...)
	}
}

func newTable(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
}

func render(out io.Writer, format string, v any, table func(w io.Writer), stream bool) error {
	switch format {
	case "json":
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		if stream {
			if _, err := io.WriteString(out, "---\n"); err != nil {
				return err
			}
		}
		_, err = out.Write(b)
		return err
	}
	tw := newTable(out)
	table(tw)
	return tw.Flush()
}

// row writes one tab-separated table line.
func row(w io.Writer, cols ...any) {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(w, strings.Join(parts, "\t"))
}

// splitBytes is bytes as text when they are UTF-8 and as base64 otherwise:
// in JSON and YAML exactly one of the two is set.
func splitBytes(b []byte) (*string, string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, ""
	}
	return nil, base64.StdEncoding.EncodeToString(b)
}

// cell is bytes in a table cell: text as is when printable, quoted when it
// has control characters, base64: otherwise.
func cell(b []byte) string {
	if !utf8.Valid(b) {
		return "base64:" + base64.StdEncoding.EncodeToString(b)
	}
	s := string(b)
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) }) >= 0 {
		return strconv.Quote(s)
	}
	if s == "" {
		return `""`
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// kvOut is one key of the tree.
type kvOut struct {
	Key            string  `json:"key"`
	Value          *string `json:"value,omitempty"`
	ValueBase64    string  `json:"value_base64,omitempty"`
	CreateRevision int64   `json:"create_revision"`
	ModRevision    int64   `json:"mod_revision"`
	Version        int64   `json:"version"`
}

func toKV(kv *hivemindv1.KeyValue) *kvOut {
	if kv == nil {
		return nil
	}
	o := &kvOut{Key: kv.GetKey(), CreateRevision: kv.GetCreateRevision(), ModRevision: kv.GetModRevision(), Version: kv.GetVersion()}
	o.Value, o.ValueBase64 = splitBytes(kv.GetValue())
	return o
}

func kvTable(w io.Writer, kvs []*hivemindv1.KeyValue) {
	row(w, "KEY", "VALUE", "MOD_REV", "VERSION")
	for _, kv := range kvs {
		row(w, kv.GetKey(), cell(kv.GetValue()), kv.GetModRevision(), kv.GetVersion())
	}
}

// eventOut is one event of the log.
type eventOut struct {
	Revision      int64   `json:"revision"`
	ID            string  `json:"id"`
	Type          string  `json:"type"`
	Hook          string  `json:"hook"`
	URI           string  `json:"uri"`
	Source        string  `json:"source,omitempty"`
	Time          string  `json:"time,omitempty"`
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 string  `json:"payload_base64,omitempty"`
	KV            *kvOut  `json:"kv,omitempty"`
}

func toEvent(e *hivemindv1.Event) *eventOut {
	o := &eventOut{
		Revision: e.GetRevision(), ID: e.GetId(), Type: e.GetType(), Hook: hookName(e.GetHook()),
		URI: e.GetUri(), Source: e.GetSource(), Time: ts(e.GetTime()), KV: toKV(e.GetKv()),
	}
	if len(e.GetPayload()) > 0 {
		o.Payload, o.PayloadBase64 = splitBytes(e.GetPayload())
	}
	return o
}

var eventHeader = []any{"REVISION", "TYPE", "HOOK", "URI", "SOURCE", "PAYLOAD"}

// eventWidths are the column widths of a live event table, which cannot
// wait for every row to align them.
var eventWidths = []int{9, 18, 7, 32, 12}

// eventRow writes an event's table line: tab-separated for a table that
// is aligned once complete, in fixed widths for a live one.
func eventRow(w io.Writer, e *hivemindv1.Event, live bool) {
	cols := []any{e.GetRevision(), e.GetType(), hookName(e.GetHook()), e.GetUri(), orDash(e.GetSource()), cell(e.GetPayload())}
	if live {
		fmt.Fprintln(w, fixedRow(eventWidths, cols...))
		return
	}
	row(w, cols...)
}

// fixedRow pads each column but the last to its width (a longer value
// still gets one space after it).
func fixedRow(widths []int, cols ...any) string {
	var b strings.Builder
	for i, c := range cols {
		s := fmt.Sprint(c)
		b.WriteString(s)
		if i < len(cols)-1 {
			pad := 1
			if i < len(widths) && widths[i] > len(s) {
				pad = widths[i] - len(s)
			}
			b.WriteString(strings.Repeat(" ", pad))
		}
	}
	return b.String()
}

func hookName(h hivemindv1.Hook) string {
	return strings.ToLower(strings.TrimPrefix(h.String(), "HOOK_"))
}

func parseHook(s string) (hivemindv1.Hook, error) {
	v, ok := hivemindv1.Hook_value["HOOK_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, usagef("--hook %q: want create, modify, delete or query", s)
	}
	return hivemindv1.Hook(v), nil
}

// ts is a timestamp in RFC 3339 (UTC), or "" when unset.
func ts(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

// dur is a duration as Go prints it, or "" when unset.
func dur(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return d.AsDuration().String()
}

// healthName is a health status in lower case (passing, warning, critical).
func healthName(h hivemindv1.HealthStatus) string {
	return strings.ToLower(strings.TrimPrefix(h.String(), "HEALTH_STATUS_"))
}

func memberStateName(s hivemindv1.MemberState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MEMBER_STATE_"))
}

// headerOut is the state an answer reflects.
type headerOut struct {
	Revision int64  `json:"revision"`
	RaftTerm uint64 `json:"raft_term"`
	Node     string `json:"node"`
	Stale    bool   `json:"stale,omitempty"`
	Epoch    uint64 `json:"epoch"`
}

func toHeader(h *hivemindv1.ResponseHeader) headerOut {
	return headerOut{Revision: h.GetRevision(), RaftTerm: h.GetRaftTerm(), Node: h.GetNodeName(), Stale: h.GetStale(), Epoch: h.GetEpoch()}
}
