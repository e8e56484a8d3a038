package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivemind/hivemind/pkg/atomicfile"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
)

// Source is the member a snapshot is taken from.
type Source interface {
	Machine() *fsm.Machine
	ClusterID() uint64
	Name() string
	Members() []*hivemindv1.Member
}

// Take captures src's state and returns the header and encoded state of a
// snapshot file. The capture holds the state machine's read lock only while
// it copies references to the state (its stored messages are never
// modified), so writes wait at most that long; encoding happens after.
func Take(src Source, now time.Time) (*hivemindv1.SnapshotHeader, []byte, error) {
	snap := src.Machine().Snapshot()
	state, err := snap.MarshalVT()
	if err != nil {
		return nil, nil, err
	}
	return &hivemindv1.SnapshotHeader{
		Revision:  snap.GetRevision(),
		Epoch:     snap.GetEpoch(),
		ClusterId: src.ClusterID(),
		CreatedAt: timestamppb.New(now),
		Member:    src.Name(),
		Members:   src.Members(),
	}, state, nil
}

// Stream receives a snapshot file from a ControlPlane/Snapshot call.
type Stream interface {
	Recv() (*hivemindv1.SnapshotResponse, error)
}

// Save writes the snapshot file a Snapshot call streams to path,
// atomically: nothing is at path unless the whole file arrived and its
// trailer matched. It returns the file's header.
func Save(ctx context.Context, st Stream, path string) (*hivemindv1.SnapshotHeader, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	v := NewVerifier()
	w := io.MultiWriter(tmp, v)
	var hdr *hivemindv1.SnapshotHeader
	var sum []byte
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if resp.GetHeader() != nil {
			hdr = resp.GetHeader()
		}
		if _, err := w.Write(resp.GetData()); err != nil {
			return nil, err
		}
		if len(resp.GetSha256()) > 0 {
			sum = resp.GetSha256()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if hdr == nil {
		return nil, fmt.Errorf("%w: the stream sent no header", ErrDamaged)
	}
	if err := v.Check(sum); err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, err
	}
	done = true
	return hdr, atomicfile.SyncDir(dir)
}

// Chunker turns the bytes of a snapshot file into SnapshotResponse
// messages of at most Size bytes of data: the first carries Header, and
// Finish sends the rest with the trailer.
type Chunker struct {
	Send   func(*hivemindv1.SnapshotResponse) error
	Header *hivemindv1.SnapshotHeader
	Size   int
	buf    []byte
	sent   bool
}

func (c *Chunker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.buf == nil {
			c.buf = make([]byte, 0, c.Size)
		}
		k := min(c.Size-len(c.buf), len(p))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == c.Size {
			// A sent message is not touched again: the next chunk gets a
			// buffer of its own.
			if err := c.send(c.buf, nil); err != nil {
				return 0, err
			}
			c.buf = nil
		}
	}
	return n, nil
}

// Finish sends what is left and the trailer sum.
func (c *Chunker) Finish(sum []byte) error { return c.send(c.buf, sum) }

func (c *Chunker) send(data, sum []byte) error {
	resp := &hivemindv1.SnapshotResponse{Data: data, Sha256: sum}
	if !c.sent {
		resp.Header, c.sent = c.Header, true
	}
	return c.Send(resp)
}
