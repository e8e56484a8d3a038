package fsm

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

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
		{"txn too big in all", txnCmd(&hivemindv1.TxnRequest{Success: repeatBig(5), Failure: repeatBig(0)}), "txn"},
		{"txn at the size limit", txnCmd(&hivemindv1.TxnRequest{Success: repeatBig(4)[:3], Failure: repeatBig(1)}), ""},
		{"txn too many ops", txnCmd(&hivemindv1.TxnRequest{Success: make([]*hivemindv1.TxnOp, MaxTxnOps+1)}), "success"},
		{"lease too short", claim("/i", "h", 0, time.Millisecond), "lease"},
		{"lease too long", claim("/i", "h", 0, 2*time.Hour), "lease"},
		{"holder empty", claim("/i", "", 0, time.Minute), "holder"},
		{"compact zero", &raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{}}}, "revision"},
		{"key at the limit", put("/"+strings.Repeat("a", MaxKeyBytes-1), "v"), ""},
		{"trailing slash", put("/app/a/", "v"), ""},
		{"root key", put("/", "v"), ""},
		{"unicode key", put("/app/π/日本", "v"), ""},
		{"single dot", put("/app/./a", "v"), "key"},
		{"dot dot at the end", put("/app/..", "v"), "key"},
		{"dots inside a name are fine", put("/app/a..b/.c", "v"), ""},
		{"NUL", put("/app/\x00", "v"), "key"},
		{"DEL", put("/app/\x7f", "v"), "key"},
		{"C1 control", put("/app/\u0085", "v"), "key"},
		{"value at the limit", &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/a", Value: big[:MaxValueBytes]}}}, ""},
		{"delete key", del("nope", false), "key"},
		{"prefix delete of everything", del("", true), "key"},
		{"source too long", &raftv1.Command{Source: strings.Repeat("s", MaxHolderBytes+1), Op: put("/a", "v").Op}, "source"},
		{"proposer too long", &raftv1.Command{Proposer: strings.Repeat("p", MaxHolderBytes+1), Op: put("/a", "v").Op}, "proposer"},
		{"event type empty", appendEv(&hivemindv1.AppendEventRequest{}), "type"},
		{"event type at the limit", appendEv(&hivemindv1.AppendEventRequest{Type: strings.Repeat("a", MaxEventTypeLen)}), ""},
		{"event type too long", appendEv(&hivemindv1.AppendEventRequest{Type: strings.Repeat("a", MaxEventTypeLen+1)}), "type"},
		{"event type charset", appendEv(&hivemindv1.AppendEventRequest{Type: "svc_health-changed.v2"}), ""},
		{"event source", appendEv(&hivemindv1.AppendEventRequest{Type: "a", Source: strings.Repeat("s", MaxHolderBytes+1)}), "source"},
		{"event attachments count", appendEv(&hivemindv1.AppendEventRequest{Type: "a", Attachments: make([]*hivemindv1.Attachment, MaxAttachments+1)}), "attachments"},
		{"event payload plus attachments", appendEv(&hivemindv1.AppendEventRequest{Type: "a", Payload: big[:MaxEventBytes/2], Attachments: []*hivemindv1.Attachment{{Data: big[:MaxEventBytes/2+1]}}}), "payload"},
		{"event at the size limit", appendEv(&hivemindv1.AppendEventRequest{Type: "a", Payload: big[:MaxEventBytes/2], Attachments: []*hivemindv1.Attachment{{Data: big[:MaxEventBytes/2]}}}), ""},
		{"event hops unlimited", appendEv(&hivemindv1.AppendEventRequest{Type: "a", Ttl: &hivemindv1.EventTTL{Hops: 7}}), ""},
		{"event expiry", appendEv(&hivemindv1.AppendEventRequest{Type: "a", Ttl: &hivemindv1.EventTTL{ExpiresAt: &timestamppb.Timestamp{Nanos: -1}}}), "ttl.expires_at"},
		{"txn too many compares", txnCmd(&hivemindv1.TxnRequest{Compares: make([]*hivemindv1.Compare, MaxTxnCompares+1)}), "compares"},
		{"txn compare key", txnCmd(&hivemindv1.TxnRequest{Compares: []*hivemindv1.Compare{okCmp, {Key: "x"}}}), "compares[1].key"},
		{"txn compare value", txnCmd(&hivemindv1.TxnRequest{Compares: []*hivemindv1.Compare{{Key: "/a", Target: hivemindv1.Compare_TARGET_VALUE, Result: hivemindv1.Compare_RESULT_EQUAL, Value: big}}}), "compares[0].value"},
		{"txn compare unknown target", txnCmd(&hivemindv1.TxnRequest{Compares: []*hivemindv1.Compare{{Key: "/a", Target: 9, Result: hivemindv1.Compare_RESULT_EQUAL}}}), "compares[0].target"},
		{"txn at the limits", txnCmd(&hivemindv1.TxnRequest{Compares: repeatCmp(MaxTxnCompares), Success: repeatOp(MaxTxnOps), Failure: repeatOp(MaxTxnOps)}), ""},
		{"txn too many failure ops", txnCmd(&hivemindv1.TxnRequest{Failure: repeatOp(MaxTxnOps + 1)}), "failure"},
		{"txn put value", txnCmd(&hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: "/a", Value: big}}}}}), "success[0].put.value"},
		{"txn delete key", txnCmd(&hivemindv1.TxnRequest{Failure: []*hivemindv1.TxnOp{tget("/a"), {Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: "/", Prefix: true}}}}}), "failure[1].delete.key"},
		{"txn get key", txnCmd(&hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{tget("/a"), tget("/a"), tget("a")}}), "success[2].get.key"},
		{"claim key", claim("i", "h", 0, time.Minute), "key"},
		{"holder too long", claim("/i", strings.Repeat("h", MaxHolderBytes+1), 0, time.Minute), "holder"},
		{"lease at the bounds", claim("/i", "h", 0, time.Second), ""},
		{"lease at the upper bound", claim("/i", "h", 0, time.Hour), ""},
		{"lease default", &raftv1.Command{Op: &raftv1.Command_ClaimIntent{ClaimIntent: &hivemindv1.ClaimIntentRequest{Key: "/i", Holder: "h"}}}, ""},
		{"lease invalid", &raftv1.Command{Op: &raftv1.Command_ClaimIntent{ClaimIntent: &hivemindv1.ClaimIntentRequest{Key: "/i", Holder: "h", Lease: &durationpb.Duration{Seconds: 5, Nanos: -1}}}}, "lease"},
		{"outcome too big", &raftv1.Command{Op: &raftv1.Command_CompleteIntent{CompleteIntent: &hivemindv1.CompleteIntentRequest{Key: "/i", Holder: "h", Outcome: string(big)}}}, "outcome"},
		{"complete holder", &raftv1.Command{Op: &raftv1.Command_CompleteIntent{CompleteIntent: &hivemindv1.CompleteIntentRequest{Key: "/i"}}}, "holder"},
		{"release key", &raftv1.Command{Op: &raftv1.Command_ReleaseIntent{ReleaseIntent: &hivemindv1.ReleaseIntentRequest{Key: "/i//x", Holder: "h"}}}, "key"},
		{"compact negative", &raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{Revision: -1}}}, "revision"},
		{"leader change", leaderChange(0), ""},
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

var okCmp = &hivemindv1.Compare{Key: "/a", Target: hivemindv1.Compare_TARGET_VERSION, Result: hivemindv1.Compare_RESULT_EQUAL}

func appendEv(req *hivemindv1.AppendEventRequest) *raftv1.Command {
	return &raftv1.Command{Op: &raftv1.Command_AppendEvent{AppendEvent: req}}
}

func repeatCmp(n int) []*hivemindv1.Compare {
	out := make([]*hivemindv1.Compare, n)
	for i := range out {
		out[i] = okCmp
	}
	return out
}

// repeatBig is n puts of values just under 1 MiB, so four fit in a txn
// and five do not.
func repeatBig(n int) []*hivemindv1.TxnOp {
	out := make([]*hivemindv1.TxnOp, n)
	for i := range out {
		out[i] = tput("/a", strings.Repeat("v", MaxValueBytes-16))
	}
	return out
}

func repeatOp(n int) []*hivemindv1.TxnOp {
	out := make([]*hivemindv1.TxnOp, n)
	for i := range out {
		out[i] = tput("/a", "v")
	}
	return out
}

func TestValidateReadRequests(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		field string
		code  codes.Code
	}{
		{"watch from the future", ValidateWatch(&hivemindv1.WatchRequest{StartRevision: 12}, 10), "start_revision", codes.OutOfRange},
		{"watch from the next revision", ValidateWatch(&hivemindv1.WatchRequest{StartRevision: 11}, 10), "", codes.OK},
		{"watch from now", ValidateWatch(&hivemindv1.WatchRequest{}, 10), "", codes.OK},
		{"watch negative", ValidateWatch(&hivemindv1.WatchRequest{StartRevision: -1}, 10), "start_revision", codes.InvalidArgument},
		{"watch prefix", ValidateWatch(&hivemindv1.WatchRequest{Prefix: "srv"}, 10), "prefix", codes.InvalidArgument},
		{"watch partial segment prefix", ValidateWatch(&hivemindv1.WatchRequest{Prefix: "/srv/we"}, 10), "", codes.OK},
		{"watch too many types", ValidateWatch(&hivemindv1.WatchRequest{Types: make([]string, MaxWatchTypes+1)}, 10), "types", codes.InvalidArgument},
		{"watch second type", ValidateWatch(&hivemindv1.WatchRequest{Types: []string{"kv.put", ""}}, 10), "types[1]", codes.InvalidArgument},
		{"watch progress", ValidateWatch(&hivemindv1.WatchRequest{ProgressInterval: durationpb.New(-time.Second)}, 10), "progress_interval", codes.InvalidArgument},
		{"range limit negative", ValidateRange(&hivemindv1.RangeRequest{Limit: -1}), "limit", codes.InvalidArgument},
		{"range limit max", ValidateRange(&hivemindv1.RangeRequest{Limit: MaxRangeLimit}), "", codes.OK},
		{"range prefix", ValidateRange(&hivemindv1.RangeRequest{Prefix: "a"}), "prefix", codes.InvalidArgument},
		{"range start_after", ValidateRange(&hivemindv1.RangeRequest{StartAfter: "/" + strings.Repeat("a", MaxKeyBytes)}), "start_after", codes.InvalidArgument},
		{"get", ValidateGet(&hivemindv1.GetRequest{Key: "/a/../b"}), "key", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.field == "" {
				if tt.err != nil {
					t.Fatalf("unexpected %v", tt.err)
				}
				return
			}
			fe, ok := tt.err.(*FieldError)
			if !ok || fe.Field != tt.field || fe.Code != tt.code {
				t.Fatalf("got %v, want %v on %q", tt.err, tt.code, tt.field)
			}
		})
	}
	err := ValidateWatch(&hivemindv1.WatchRequest{StartRevision: 12}, 10)
	if want := "invalid start_revision: 12 is after the current revision 10"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
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
	seeds := []*raftv1.Command{put("/a/b", "v"), del("/a/", true), claim("/i", "h", 5, time.Minute), txnCmd(&hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{tput("/x", "y"), tget("/x")}})}
	seeds = append(seeds, complete("/i", "h", 9), release("/i", "x", 9), leaderChange(1<<40), appendEv(&hivemindv1.AppendEventRequest{Type: "a.b", Uri: "/u"}))
	seeds = append(seeds, &raftv1.Command{IdempotencyKey: "k", Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{Revision: 2}}})
	for _, c := range seeds {
		b, _ := proto.Marshal(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cmd raftv1.Command
		if proto.Unmarshal(data, &cmd) != nil {
			return
		}
		m := New(TestConfig())
		mustApply(t, m, put("/a/b", "seed"))
		mustApply(t, m, claim("/i", "h", 5, time.Minute))
		before := m.Snapshot()
		valid := ValidateCommand(&cmd) == nil
		res, evs := m.Apply(&cmd)
		if !valid && (res.GetCode() == 0 || len(evs) != 0) {
			t.Fatalf("invalid command applied: %v", res)
		}
		if res.GetCode() != 0 && (len(evs) != 0 || m.Revision() != before.GetRevision()) {
			t.Fatalf("rejected command changed the revision: %v", res)
		}
		// Whatever it did survives a snapshot round trip.
		r := New(TestConfig())
		if err := r.Restore(m.Snapshot()); err != nil {
			t.Fatalf("own snapshot refused: %v", err)
		}
		if !proto.Equal(r.Snapshot(), m.Snapshot()) {
			t.Fatal("snapshot round trip differs")
		}
		// A replay is answered from the window.
		if cmd.GetIdempotencyKey() != "" && len(cmd.GetIdempotencyKey()) <= MaxIdempotencyKeyBytes {
			again, evs := m.Apply(&cmd)
			if again != res || len(evs) != 0 {
				t.Fatal("replay was applied again")
			}
		}
	})
}
