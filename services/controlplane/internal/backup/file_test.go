package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

func sampleFile(t *testing.T) ([]byte, *hivemindv1.SnapshotHeader, *raftv1.Snapshot) {
	t.Helper()
	snap := &raftv1.Snapshot{Revision: 7, Epoch: 2, OldestRevision: 1}
	for i := range 50 {
		snap.Kvs = append(snap.Kvs, &hivemindv1.KeyValue{Key: "/app/k" + string(rune('a'+i%26)) + strings.Repeat("x", i), Value: []byte("v"), CreateRevision: 1, ModRevision: 7})
	}
	state, err := snap.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	hdr := &hivemindv1.SnapshotHeader{Revision: 7, Epoch: 2, ClusterId: 0xabc, Member: "cp1", CreatedAt: timestamppb.New(time.Unix(1700000000, 0))}
	var buf bytes.Buffer
	sum, err := Encode(&buf, hdr, state)
	if err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if !bytes.Equal(b[len(b)-sha256.Size:], sum) {
		t.Fatal("the file does not end with the sum Encode returned")
	}
	return b, hdr, snap
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	b, hdr, snap := sampleFile(t)
	gotHdr, gotSnap, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(gotHdr, hdr) || gotHdr.GetFormatVersion() != FormatVersion {
		t.Errorf("header %v, want %v", gotHdr, hdr)
	}
	if !proto.Equal(gotSnap, snap) {
		t.Error("state differs after a round trip")
	}
}

// Every damaged, cut or foreign file is refused with ErrDamaged and a
// reason, never decoded.
func TestDecodeRefusesDamage(t *testing.T) {
	good, _, _ := sampleFile(t)
	cases := map[string]struct {
		b    []byte
		want string
	}{
		"empty":         {nil, "not a hivemind snapshot"},
		"another file":  {[]byte("PK\x03\x04 a zip file, say"), "not a hivemind snapshot"},
		"only magic":    {good[:len(magic)+2], "truncated"},
		"cut in header": {good[:prefixLen+3], "truncated"},
		"cut in state":  {good[:len(good)/2], "truncated or extended"},
		"trailer cut":   {good[:len(good)-1], "truncated or extended"},
		"extended":      {append(append([]byte(nil), good...), 0), "truncated or extended"},
	}
	v2 := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(v2[len(magic):], 2)
	cases["version 2"] = struct {
		b    []byte
		want string
	}{v2, "format version 2; this binary reads version 1"}
	for off := prefixLen; off < len(good); off += 97 {
		flipped := append([]byte(nil), good...)
		flipped[off] ^= 0x10
		cases[fmt.Sprintf("flipped byte at %d", off)] = struct {
			b    []byte
			want string
		}{flipped, ""}
	}
	for name, c := range cases {
		_, _, err := Decode(c.b)
		if !errors.Is(err, ErrDamaged) {
			t.Errorf("%s: %v, want ErrDamaged", name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %q does not say %q", name, err, c.want)
		}
	}
}

func TestReadFileNamesThePath(t *testing.T) {
	good, _, _ := sampleFile(t)
	path := filepath.Join(t.TempDir(), "s.hmsnap")
	if err := os.WriteFile(path, good[:len(good)-5], 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := ReadFile(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("ReadFile of a cut file: %v; want an error naming %s", err, path)
	}
}

// The chunked stream reassembles into the same file, header first and
// trailer last, and a verifier fed the chunks accepts it (and only it).
func TestChunkerAndVerifier(t *testing.T) {
	_, hdr, snap := sampleFile(t)
	state, _ := snap.MarshalVT()
	var msgs []*hivemindv1.SnapshotResponse
	c := &Chunker{Send: func(r *hivemindv1.SnapshotResponse) error { msgs = append(msgs, r); return nil }, Header: hdr, Size: 100}
	sum, err := Encode(c, hdr, state)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(sum); err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 3 || msgs[0].GetHeader() == nil || msgs[1].GetHeader() != nil || !bytes.Equal(msgs[len(msgs)-1].GetSha256(), sum) {
		t.Fatalf("%d messages; want the header on the first only and the sum on the last", len(msgs))
	}
	var file []byte
	v := NewVerifier()
	for _, m := range msgs {
		if len(m.GetData()) > 100 {
			t.Fatalf("a chunk of %d bytes, more than 100", len(m.GetData()))
		}
		file = append(file, m.GetData()...)
		v.Write(m.GetData())
	}
	if _, _, err := Decode(file); err != nil {
		t.Fatalf("reassembled file: %v", err)
	}
	if err := v.Check(sum); err != nil {
		t.Fatalf("verifier: %v", err)
	}
	bad := NewVerifier()
	bad.Write(file[:len(file)-40])
	if err := bad.Check(sum); !errors.Is(err, ErrDamaged) {
		t.Fatalf("verifier of a cut stream: %v, want ErrDamaged", err)
	}
}
