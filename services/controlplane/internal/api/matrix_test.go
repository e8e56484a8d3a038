package api_test

import (
	"context"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// outcome of a call in the name matrix.
type outcome int

const (
	allowed outcome = iota // no refusal (the call's own answer)
	denied                 // PERMISSION_DENIED
	hidden                 // answered, but the key is not there for the caller
	shown                  // answered, and the key is there
)

func (o outcome) String() string {
	return [...]string{"allowed", "PERMISSION_DENIED", "hidden", "shown"}[o]
}

// TestNameMatrix is the control plane's authorization by name and role:
// each row a call about host1's part of the tree or a namespace the cluster
// owns, each column a caller. Scopes are the policy's (pkg/auth's matrix);
// this is what the caller's name and roles decide on top of them.
func TestNameMatrix(t *testing.T) {
	c := startSecured(t)
	f := follower(c)
	const secret = "/notifier/secrets/matrix"
	if _, err := as(t, c, f, "notifier1").Put(ctx(t), &hivemindv1.PutRequest{Key: secret, Value: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	callersInOrder := []string{"host1", "host2", "notifier1", "ops-write", "ops-admin"}
	put := func(key string) func(context.Context, hivemindv1.ControlPlaneClient) (outcome, error) {
		return func(ctx context.Context, cp hivemindv1.ControlPlaneClient) (outcome, error) {
			_, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: key, Value: []byte("v")})
			return allowed, err
		}
	}
	appendAt := func(typ, uri string) func(context.Context, hivemindv1.ControlPlaneClient) (outcome, error) {
		return func(ctx context.Context, cp hivemindv1.ControlPlaneClient) (outcome, error) {
			_, err := cp.AppendEvent(ctx, &hivemindv1.AppendEventRequest{Type: typ, Uri: uri})
			return allowed, err
		}
	}
	rows := []struct {
		call string
		do   func(context.Context, hivemindv1.ControlPlaneClient) (outcome, error)
		want []outcome // by callersInOrder
	}{
		{"Put /nodes/host1/k", put("/nodes/host1/k"), []outcome{allowed, denied, denied, allowed, allowed}},
		{"Delete /nodes/host1/k", func(ctx context.Context, cp hivemindv1.ControlPlaneClient) (outcome, error) {
			_, err := cp.Delete(ctx, &hivemindv1.DeleteRequest{Key: "/nodes/host1/k"})
			return allowed, err
		}, []outcome{allowed, denied, denied, allowed, allowed}},
		{"Delete every key under /nodes/", func(ctx context.Context, cp hivemindv1.ControlPlaneClient) (outcome, error) {
			_, err := cp.Delete(ctx, &hivemindv1.DeleteRequest{Key: "/nodes/zz-none/", Prefix: true})
			return allowed, err
		}, []outcome{denied, denied, denied, allowed, allowed}},
		{"Txn put /nodes/host1/k", func(ctx context.Context, cp hivemindv1.ControlPlaneClient) (outcome, error) {
			_, err := cp.Txn(ctx, &hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: "/nodes/host1/k", Value: []byte("v")}}}}})
			return allowed, err
		}, []outcome{allowed, denied, denied, allowed, allowed}},
		{"AppendEvent under /nodes/host1/", appendAt("app.note", "/nodes/host1/e"), []outcome{allowed, denied, denied, denied, allowed}},
		{"AppendEvent kv.put (the state machine's)", appendAt("kv.put", "/app/x"), []outcome{denied, denied, denied, denied, denied}},
		{"AppendEvent member.failed (the state machine's)", appendAt("member.failed", "/app/x"), []outcome{denied, denied, denied, denied, denied}},
		{"AppendEvent under /members/", appendAt("app.note", "/members/host1"), []outcome{denied, denied, denied, denied, denied}},
		{"AppendEvent under /notifier/", appendAt("app.note", "/notifier/subscriptions/x"), []outcome{denied, denied, allowed, denied, denied}},
		{"Put /notifier/subscriptions/x", put("/notifier/subscriptions/x"), []outcome{denied, denied, allowed, denied, denied}},
		{"Put /app/x", put("/app/x"), []outcome{allowed, allowed, allowed, allowed, allowed}},
		{"Get a subscription secret", func(ctx context.Context, cp hivemindv1.ControlPlaneClient) (outcome, error) {
			resp, err := cp.Get(ctx, &hivemindv1.GetRequest{Key: secret})
			if resp.GetFound() {
				return shown, err
			}
			return hidden, err
		}, []outcome{hidden, hidden, shown, hidden, shown}},
		{"Range /notifier/secrets/", func(ctx context.Context, cp hivemindv1.ControlPlaneClient) (outcome, error) {
			resp, err := cp.Range(ctx, &hivemindv1.RangeRequest{Prefix: auth.NotifierSecretsPrefix})
			if len(resp.GetKvs()) > 0 {
				return shown, err
			}
			return hidden, err
		}, []outcome{hidden, hidden, shown, hidden, shown}},
		// A snapshot holds every key, secrets included: admin operators only.
		{"Snapshot", func(ctx context.Context, cp hivemindv1.ControlPlaneClient) (outcome, error) {
			st, err := cp.Snapshot(ctx, &hivemindv1.SnapshotRequest{})
			if err != nil {
				return allowed, err
			}
			for {
				if _, err := st.Recv(); err == io.EOF {
					return allowed, nil
				} else if err != nil {
					return allowed, err
				}
			}
		}, []outcome{denied, denied, denied, denied, allowed}},
	}
	for _, row := range rows {
		for i, who := range callersInOrder {
			got, err := row.do(ctx(t), rawAs(t, c, f, who))
			switch {
			case status.Code(err) == codes.PermissionDenied:
				got = denied
			case err != nil:
				t.Errorf("%s as %s: %v", row.call, who, err)
				continue
			}
			if got != row.want[i] {
				t.Errorf("%s as %s: %v (%v), want %v", row.call, who, got, err, row.want[i])
			}
		}
	}

	// Control-plane internals: no caller above is a control-plane member.
	for _, who := range callersInOrder {
		conn, err := grpcclient.Dial(c.Nodes[c.Leader()].Addr, grpcclient.Config{MaxRetries: -1, Auth: auth.BearerToken(who)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = raftv1.NewRaftClient(conn).Forward(ctx(t), &raftv1.ForwardRequest{Command: &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/app/forwarded", Value: []byte("v")}}}})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Raft/Forward as %s: %v, want PERMISSION_DENIED", who, err)
		}
		conn.Close()
	}
}
