package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
)

// A 5 MiB Put is refused with RESOURCE_EXHAUSTED before it is proposed,
// and one just over the request limit is refused naming the limit and
// its flag.
func TestRequestLimit(t *testing.T) {
	c := cptest.Start(t, 1, cptest.Options{})
	cl := direct(t, c, 0)
	_, err := cl.Put(ctx(t), &hivemindv1.PutRequest{Key: "/app/huge", Value: make([]byte, 5<<20)})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
		t.Fatalf("5 MiB Put: %v, want RESOURCE_EXHAUSTED for its size", err)
	}
	_, err = cl.Txn(ctx(t), &hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{txnPut("/app/a", 1<<20), txnPut("/app/b", 1<<20), txnPut("/app/c", 1<<20), txnPut("/app/d", 1<<20)}})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "request limit of 4194304 bytes (--max-request-bytes)") {
		t.Fatalf("a Txn just over 4 MiB: %v, want RESOURCE_EXHAUSTED naming the limit", err)
	}
	if resp, err := cl.Range(ctx(t), &hivemindv1.RangeRequest{Prefix: "/app/"}); err != nil || len(resp.GetKvs()) != 0 {
		t.Fatalf("after the refusals: %v %v, want nothing written", resp, err)
	}
}

func txnPut(key string, size int) *hivemindv1.TxnOp {
	return &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: key, Value: []byte(strings.Repeat("v", size))}}}
}

// With every member at the smallest request limit (1 MiB), a transaction
// just under it, sent to a follower, is forwarded to the leader (the
// envelope fits) and replicated to every member over gRPC (its raft
// append is larger than a frame and travels in fragments).
func TestWriteAtTheLimitThroughAFollower(t *testing.T) {
	const limit = grpcserver.MinMaxRequestBytes
	c := cptest.Start(t, 3, cptest.Options{MaxRequestBytes: limit, Tick: 100 * time.Millisecond})
	follower := direct(t, c, (c.Leader()+1)%3)

	var ops []*hivemindv1.TxnOp
	for i := range 3 {
		ops = append(ops, txnPut(fmt.Sprintf("/app/big/%d", i), (limit-(4<<10))/3))
	}
	req := &hivemindv1.TxnRequest{Success: ops, IdempotencyKey: "at-the-limit"}
	if n := req.SizeVT(); n > limit || n < limit-(8<<10) {
		t.Fatalf("the request is %d bytes; want just under %d", n, limit)
	}
	// While the members write a 1 MiB entry, the leader can miss their
	// answers for longer than its quorum window (500 ms at this tick)
	// on a busy machine under the race detector, and says UNAVAILABLE, as
	// the code before this test did too; clients retry that, and the
	// idempotency key makes the retry safe.
	resp, err := follower.Txn(ctx(t), req)
	for try := 0; status.Code(err) == codes.Unavailable && try < 10; try++ {
		resp, err = follower.Txn(ctx(t), req)
	}
	if err != nil || !resp.GetSucceeded() {
		t.Fatalf("a Txn just under the limit through a follower: %v %v", resp, err)
	}
	for i := range c.Nodes {
		got, err := direct(t, c, i).Range(ctx(t), &hivemindv1.RangeRequest{Prefix: "/app/big/", KeysOnly: true})
		if err != nil || len(got.GetKvs()) != len(ops) {
			t.Fatalf("member %d: %d keys, %v; want %d", i, len(got.GetKvs()), err, len(ops))
		}
	}
}
