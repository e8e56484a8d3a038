package api_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
)

// ownOnly stands in for the auth rules: the caller may write anything but
// /nodes/other/….
type ownOnly struct{}

func (ownOnly) CheckKeyWrite(_ context.Context, key string) error {
	if strings.HasPrefix(key, "/nodes/other/") {
		return status.Errorf(codes.PermissionDenied, "may not write %s", key)
	}
	return nil
}

func (ownOnly) CheckPrefixWrite(_ context.Context, prefix string) error {
	if strings.HasPrefix(prefix, "/nodes/other/") || strings.HasPrefix("/nodes/other/", prefix) {
		return status.Errorf(codes.PermissionDenied, "may not write under %s", prefix)
	}
	return nil
}

func TestWriteGuardRefusesBeforeAnythingIsApplied(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{Guard: ownOnly{}})
	cl := c.Client(cpclient.Config{})
	put(t, cl, "/nodes/me/a", "1")
	rev := put(t, cl, "/nodes/me/b", "1").GetHeader().GetRevision()

	refused := []struct {
		name string
		call func() error
	}{
		{"put", func() error {
			_, err := cl.Put(ctx(t), &hivemindv1.PutRequest{Key: "/nodes/other/x", Value: []byte("v")})
			return err
		}},
		{"delete", func() error {
			_, err := cl.Delete(ctx(t), &hivemindv1.DeleteRequest{Key: "/nodes/other/x"})
			return err
		}},
		{"prefix delete reaching other nodes", func() error {
			_, err := cl.Delete(ctx(t), &hivemindv1.DeleteRequest{Key: "/nodes/", Prefix: true})
			return err
		}},
		{"txn with one forbidden op after an allowed one", func() error {
			_, err := cl.Txn(ctx(t), &hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{
				{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: "/nodes/me/c", Value: []byte("v")}}},
				{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: "/nodes/other/c", Value: []byte("v")}}},
			}})
			return err
		}},
		{"txn failure branch", func() error {
			_, err := cl.Txn(ctx(t), &hivemindv1.TxnRequest{Failure: []*hivemindv1.TxnOp{
				{Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: "/nodes/other/", Prefix: true}}},
			}})
			return err
		}},
	}
	for _, r := range refused {
		if err := r.call(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PERMISSION_DENIED", r.name, err)
		}
	}
	resp, err := cl.Get(ctx(t), &hivemindv1.GetRequest{Key: "/nodes/me/a"})
	if err != nil || resp.GetHeader().GetRevision() != rev {
		t.Fatalf("revision after refused writes: %d (%v), want %d: something was applied", resp.GetHeader().GetRevision(), err, rev)
	}
}
