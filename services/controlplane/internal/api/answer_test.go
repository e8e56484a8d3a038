package api

import (
	"testing"

	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// A write's answer gets its own header; the result it was copied from (kept
// in the idempotency window) keeps its header, and every other field is
// carried over.
func TestAnswerOfLeavesTheResultAlone(t *testing.T) {
	kv := &hivemindv1.KeyValue{Key: "/a", Value: []byte("v"), Version: 2}
	prev := &hivemindv1.KeyValue{Key: "/a", Value: []byte("u"), Version: 1}
	res := &hivemindv1.PutResponse{Header: &hivemindv1.ResponseHeader{Revision: 7}, Kv: kv, PrevKv: prev, Applied: true}
	want := proto.Clone(res).(*hivemindv1.PutResponse)

	out := answerOf(res)
	out.Header = &hivemindv1.ResponseHeader{Revision: 7, RaftTerm: 3, NodeName: "cp1"}

	if !proto.Equal(res, want) {
		t.Fatalf("the result changed: %v, want %v", res, want)
	}
	out.Header = res.GetHeader()
	if !proto.Equal(out, res) {
		t.Fatalf("the answer lost fields: %v, want %v", out, res)
	}
	if out.GetKv() != kv {
		t.Fatal("the answer copied the stored key instead of sharing it")
	}
}
