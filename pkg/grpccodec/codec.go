// Package grpccodec replaces gRPC's protobuf codec with one that uses the
// marshal and unmarshal methods protoc-gen-go-vtproto generates for
// hivemind's messages (pkg/gen), and protobuf's reflection-based code for
// every other message. The wire format is the same; only the CPU spent per
// message changes (about half on hivemind's requests, see docs/bench.md).
//
// Importing the package registers the codec for every gRPC server and client
// of the process; pkg/grpcserver and pkg/grpcclient import it.
package grpccodec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	// gRPC's own codec registers under the same name in its init; importing
	// it here runs that first, so this package's registration is the one
	// that stays.
	_ "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Name is the content subtype the codec serves, gRPC's default.
const Name = "proto"

func init() { encoding.RegisterCodecV2(codec{}) }

// vtMessage is what protoc-gen-go-vtproto adds to a message.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(dAtA []byte) (int, error)
	UnmarshalVT(dAtA []byte) error
}

// Encoded is a message marshalled ahead of time; the codec sends its bytes
// as they are. It lets many goroutines that share one stream each encode
// their own message, instead of the one goroutine that sends them all
// encoding every message in turn. The bytes must not change once handed
// to gRPC.
type Encoded []byte

type codec struct{}

func (codec) Name() string { return Name }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(Encoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(e)}, nil
	}
	if vt, ok := v.(vtMessage); ok {
		return encode(vt.SizeVT(), func(b []byte) error {
			_, err := vt.MarshalToSizedBufferVT(b)
			return err
		})
	}
	m := messageV2Of(v)
	if m == nil {
		return nil, fmt.Errorf("grpccodec: cannot marshal %T: not a protobuf message", v)
	}
	return encode(proto.Size(m), func(b []byte) error {
		_, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b[:0], m)
		return err
	})
}

// encode fills a buffer of exactly size bytes: a plain slice for small
// messages, one from gRPC's pool (returned when gRPC is done) for large.
func encode(size int, fill func([]byte) error) (mem.BufferSlice, error) {
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if err := fill(buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if err := fill(*buf); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if vt, ok := v.(vtMessage); ok {
		// UnmarshalVT merges into the message; gRPC's contract, like
		// proto.Unmarshal's, is to replace it. The generated code copies
		// bytes and strings out of buf, so freeing buf afterwards is safe.
		if r, ok := v.(interface{ Reset() }); ok {
			r.Reset()
		}
		return vt.UnmarshalVT(buf.ReadOnlyData())
	}
	m := messageV2Of(v)
	if m == nil {
		return fmt.Errorf("grpccodec: cannot unmarshal %T: not a protobuf message", v)
	}
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// messageV2Of accepts both API versions of generated messages (etcd's
// client, used by the benchmark, still has v1 messages).
func messageV2Of(v any) proto.Message {
	switch m := v.(type) {
	case protoadapt.MessageV2:
		return m
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m)
	}
	return nil
}
