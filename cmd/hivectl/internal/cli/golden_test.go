package cli

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// renderAll renders v in the three formats into one text.
func renderAll(t *testing.T, v any, table func(w io.Writer)) string {
	t.Helper()
	var b bytes.Buffer
	for _, f := range []string{"table", "json", "yaml"} {
		b.WriteString("== " + f + "\n")
		if err := render(&b, f, v, table, false); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func fixedStatus() (*hivemindv1.StatusResponse, *hivemindv1.ListMembersResponse) {
	st := &hivemindv1.StatusResponse{
		Header:   &hivemindv1.ResponseHeader{Revision: 42, RaftTerm: 3, NodeName: "cp2", Epoch: 2},
		LeaderId: 0xa1, LeaderName: "cp1", Term: 3, AppliedRevision: 42, Epoch: 2, OldestRevision: 7,
		Voters:   []*hivemindv1.Member{{Id: 0xa1, Name: "cp1"}, {Id: 0xa2, Name: "cp2"}},
		Learners: []*hivemindv1.Member{{Id: 0xa3, Name: "cp3"}},
		Degraded: true, DegradedReason: "no quorum: 1 of 3 voters reachable",
	}
	m := func(name, role, addr string, s hivemindv1.MemberState) *hivemindv1.MemberView {
		return &hivemindv1.MemberView{
			Member: &hivemindv1.ClusterMember{Name: name, Roles: &hivemindv1.Roles{Performs: []string{role}}, GrpcAddress: addr, State: s, Incarnation: 2, JoinRevision: 5},
			Gossip: &hivemindv1.GossipView{State: "alive"},
		}
	}
	ms := &hivemindv1.ListMembersResponse{Epoch: 2, Revision: 42, AnsweredBy: "cp2", Members: []*hivemindv1.MemberView{
		m("cp1", "controlplane", "127.0.0.1:7001", hivemindv1.MemberState_MEMBER_STATE_ALIVE),
		m("cp2", "controlplane", "127.0.0.1:7002", hivemindv1.MemberState_MEMBER_STATE_ALIVE),
		m("cp3", "controlplane", "127.0.0.1:7003", hivemindv1.MemberState_MEMBER_STATE_SUSPECT),
		m("host1", "host", "127.0.0.1:7101", hivemindv1.MemberState_MEMBER_STATE_FAILED),
	}}
	return st, ms
}

func TestGoldenStatus(t *testing.T) {
	st, ms := fixedStatus()
	out := buildStatus(st, ms)
	for i, h := range []string{"SERVING", "SERVING", "NOT_SERVING", "unreachable"} {
		out.Members[i].Health = h
	}
	golden(t, "status.golden", renderAll(t, out, func(w io.Writer) { statusTable(w, out) }))
}

func TestGoldenMembers(t *testing.T) {
	_, ms := fixedStatus()
	out := toMembers(ms)
	golden(t, "members.golden", renderAll(t, out, func(w io.Writer) {
		for _, m := range out {
			row(w, m.Name, m.State, m.Gossip)
		}
	}))
}

// TestGoldenKV: text values as text, binary ones as base64, in every
// format.
func TestGoldenKV(t *testing.T) {
	kvs := []*hivemindv1.KeyValue{
		{Key: "/app/web/config", Value: []byte("port=8080"), CreateRevision: 3, ModRevision: 9, Version: 4},
		{Key: "/app/web/multi", Value: []byte("a\tb\nc"), CreateRevision: 4, ModRevision: 4, Version: 1},
		{Key: "/app/web/blob", Value: []byte{0xff, 0x00, 0xfe}, CreateRevision: 5, ModRevision: 5, Version: 1},
		{Key: "/app/web/empty", CreateRevision: 6, ModRevision: 6, Version: 1},
	}
	var outs []*kvOut
	for _, kv := range kvs {
		outs = append(outs, toKV(kv))
	}
	golden(t, "kv.golden", renderAll(t, struct {
		Header headerOut `json:"header"`
		KVs    []*kvOut  `json:"kvs"`
	}{toHeader(&hivemindv1.ResponseHeader{Revision: 9, RaftTerm: 2, NodeName: "cp1", Epoch: 1}), outs}, func(w io.Writer) { kvTable(w, kvs) }))
}

// TestGoldenEventStream: a stream is one JSON object per line and one YAML
// document per event.
func TestGoldenEventStream(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	events := []*hivemindv1.Event{
		{Id: "01M0000000000001", Revision: 10, Type: "kv.put", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/app/web/config", Source: "operator:ops", Time: at,
			Payload: []byte("v2"), Kv: &hivemindv1.KeyValue{Key: "/app/web/config", Value: []byte("v2"), CreateRevision: 3, ModRevision: 10, Version: 2}},
		{Id: "01M0000000000002", Revision: 11, Type: "deploy.started", Hook: hivemindv1.Hook_HOOK_CREATE, Uri: "/app/web", Source: "host1", Time: at, Payload: []byte{0xff, 0x01}},
	}
	var b bytes.Buffer
	for _, format := range []string{"table", "table-live", "json", "yaml"} {
		b.WriteString("== " + format + "\n")
		live := format == "table-live"
		g := &globals{output: strings.TrimSuffix(format, "-live"), stdout: &b, live: live}
		if live {
			g.streamHeader(fixedRow(eventWidths, eventHeader...))
		} else {
			g.streamHeader(eventHeader...)
		}
		for _, e := range events {
			if err := g.printItem(toEvent(e), func(w io.Writer) { eventRow(w, e, live) }); err != nil {
				t.Fatal(err)
			}
		}
		if g.tw != nil {
			g.tw.Flush()
		}
	}
	golden(t, "events.golden", b.String())
}
