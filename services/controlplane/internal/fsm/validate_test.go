package fsm

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

func TestValidateCommand(t *testing.T) {
	big := make([]byte, MaxValueBytes+1)
	tests := []struct {
		name  string
		cmd   *raftv1.Command
		field string // empty: valid
	}{
		{"ok put", put("/app/a", "v"), ""},
		{"empty key", put("", "v"), "key"},
		{"no leading slash", put("app/a", "v"), "key"},
		{"double slash", put("/app//a", "v"), "key"},
		{"dot segment", put("/app/../a", "v"), "key"},
		{"control char", put("/app/\x01", "v"), "key"},
		{"invalid utf8", put("/app/\xff", "v"), "key"},
		{"key too long", put("/"+strings.Repeat("a", MaxKeyBytes), "v"), "key"},
		{"value too big", &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/a", Value: big}}}, "value"},
		{"delete everything", del("/", true), "key"},
		{"no op", &raftv1.Command{}, "op"},
		{"idempotency key too long", &raftv1.Command{IdempotencyKey: strings.Repeat("k", 129), Op: put("/a", "v").Op}, "idempotency_key"},
		{"event type", &raftv1.Command{Op: &raftv1.Command_AppendEvent{AppendEvent: &hivemindv1.AppendEventRequest{Type: "Bad Type"}}}, "type"},
		{"event hook", &raftv1.Command{Op: &raftv1.Command_AppendEvent{AppendEvent: &hivemindv1.AppendEventRequest{Type: "a.b", Hook: 42}}}, "hook"},
		{"event uri", &raftv1.Command{Op: &raftv1.Command_AppendEvent{AppendEvent: &hivemindv1.AppendEventRequest{Type: "a.b", Uri: "x"}}}, "uri"},
		{"event payload", &raftv1.Command{Op: &raftv1.Command_AppendEvent{AppendEvent: &hivemindv1.AppendEventRequest{Type: "a.b", Payload: big}}}, "payload"},
		{"event hops", &raftv1.Command{Op: &raftv1.Command_AppendEvent{AppendEvent: &hivemindv1.AppendEventRequest{Type: "a.b", Ttl: &hivemindv1.EventTTL{MaxHops: 1, Hops: 2}}}}, "ttl.hops"},
		{"txn compare target", txnCmd(&hivemindv1.TxnRequest{Compares: []*hivemindv1.Compare{{Key: "/a", Result: hivemindv1.Compare_RESULT_EQUAL}}}), "compares[0].target"},
		{"txn compare result", txnCmd(&hivemindv1.TxnRequest{Compares: []*hivemindv1.Compare{{Key: "/a", Target: hivemindv1.Compare_TARGET_VALUE}}}), "compares[0].result"},
		{"txn empty op", txnCmd(&hivemindv1.TxnRequest{Failure: []*hivemindv1.TxnOp{{}}}), "failure[0].op"},
		{"txn too many ops", txnCmd(&hivemindv1.TxnRequest{Success: make([]*hivemindv1.TxnOp, MaxTxnOps+1)}), "success"},
		{"lease too short", claim("/i", "h", 0, time.Millisecond), "lease"},
		{"lease too long", claim("/i", "h", 0, 2*time.Hour), "lease"},
		{"holder empty", claim("/i", "", 0, time.Minute), "holder"},
		{"compact zero", &raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{}}}, "revision"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateCommand(tt.cmd)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			fe, ok := err.(*FieldError)
			if !ok || fe.Field != tt.field || fe.Code != codes.InvalidArgument {
				t.Fatalf("got %v, want an INVALID_ARGUMENT error on %q", err, tt.field)
			}
			if !strings.Contains(fe.Error(), tt.field) {
				t.Fatalf("message %q does not name %q", fe.Error(), tt.field)
			}
		})
	}
}

func TestValidateReads(t *testing.T) {
	if err := ValidateWatch(&hivemindv1.WatchRequest{StartRevision: 12}, 10); err == nil || err.(*FieldError).Code != codes.OutOfRange {
		t.Fatalf("future start revision: %v", err)
	}
	if err := ValidateWatch(&hivemindv1.WatchRequest{StartRevision: 11, Prefix: "/srv/", Types: []string{"kv.put"}, ProgressInterval: durationpb.New(time.Second)}, 10); err != nil {
		t.Fatalf("next revision refused: %v", err)
	}
	if err := ValidateWatch(&hivemindv1.WatchRequest{Types: []string{"BAD"}}, 10); err == nil || err.(*FieldError).Field != "types[0]" {
		t.Fatalf("bad type: %v", err)
	}
	if err := ValidateRange(&hivemindv1.RangeRequest{Prefix: "/a", Limit: MaxRangeLimit + 1}); err == nil || err.(*FieldError).Field != "limit" {
		t.Fatalf("limit: %v", err)
	}
	if err := ValidateGet(&hivemindv1.GetRequest{Key: "nope"}); err == nil {
		t.Fatal("bad get key accepted")
	}
}

func FuzzValidateCommand(f *testing.F) {
	for _, c := range []*raftv1.Command{put("/a/b", "v"), del("/a/", true), claim("/i", "h", 5, time.Minute), txnCmd(&hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{tput("/x", "y"), tget("/x")}})} {
		b, _ := proto.Marshal(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cmd raftv1.Command
		if proto.Unmarshal(data, &cmd) != nil {
			return
		}
		m := New(TestConfig())
		valid := ValidateCommand(&cmd) == nil
		res, evs := m.Apply(&cmd)
		if !valid && (res.GetCode() == 0 || len(evs) != 0) {
			t.Fatalf("invalid command applied: %v", res)
		}
	})
}
