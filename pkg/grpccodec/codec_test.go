package grpccodec

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

func TestRegisteredAsDefault(t *testing.T) {
	if _, ok := encoding.GetCodecV2(Name).(codec); !ok {
		t.Fatalf("codec registered as %q is %T, want grpccodec's", Name, encoding.GetCodecV2(Name))
	}
}

// The wire format is protobuf's: what one side encodes, the other decodes,
// whichever encoder each uses, for small and pooled (large) messages.
func TestSameWireFormatAsProtobuf(t *testing.T) {
	c := codec{}
	for _, size := range []int{0, 256, 1 << 20} {
		in := &hivemindv1.AppendEventRequest{Type: "t", Uri: "/a/b", Payload: bytes.Repeat([]byte{7}, size), IdempotencyKey: "k"}
		got, err := c.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Fatalf("size %d: vtproto encoding differs from protobuf's", size)
		}
		got.Free()

		out := &hivemindv1.AppendEventRequest{Type: "stale", Source: "stale"}
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, out); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(in, out) {
			t.Fatalf("size %d: decoded %v, want %v (the message must be replaced, not merged)", size, out, in)
		}
	}
}

// Messages without vtproto methods (other packages' types) still work.
func TestReflectFallback(t *testing.T) {
	c := codec{}
	b, err := c.Marshal(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	out := &wrapperspb.StringValue{}
	if err := c.Unmarshal(b, out); err != nil || out.GetValue() != "x" {
		t.Fatalf("got %q, %v", out.GetValue(), err)
	}
	big := bytes.Repeat([]byte{1}, 1<<20) // above the pooling threshold
	b, err = c.Marshal(wrapperspb.Bytes(big))
	if err != nil {
		t.Fatal(err)
	}
	outBig := &wrapperspb.BytesValue{}
	if err := c.Unmarshal(b, outBig); err != nil || !bytes.Equal(outBig.GetValue(), big) {
		t.Fatalf("large message: %d bytes back, %v", len(outBig.GetValue()), err)
	}
	b.Free()
	if _, err := c.Marshal(struct{}{}); err == nil {
		t.Fatal("marshalling a non-message succeeded")
	}
}

// Bytes encoded ahead of time go out unchanged and decode as the message
// they were made from.
func TestEncodedSentAsIs(t *testing.T) {
	in := &hivemindv1.AppendEventsRequest{Seq: 9, Event: &hivemindv1.AppendEventRequest{Type: "t", Payload: []byte("p")}}
	pre, err := in.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	c := codec{}
	b, err := c.Marshal(Encoded(pre))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Materialize(), pre) {
		t.Fatal("encoded bytes were changed on the way out")
	}
	out := &hivemindv1.AppendEventsRequest{}
	if err := c.Unmarshal(b, out); err != nil || !proto.Equal(in, out) {
		t.Fatalf("decoded %v, %v; want %v", out, err, in)
	}
}
