package api_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
)

// identities authenticates a call by its bearer token against a table, and
// puts the identity it names in the context, as the auth package's
// Authenticator does with a verified token. A table lets a test give a node
// the roles a session token will carry. Calls between members (forwarding)
// carry no token and pass without an identity, as on a cluster without auth.
type identities map[string]auth.Identity

func (ids identities) Authenticate(ctx context.Context, _ string) (context.Context, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(vals) == 0 {
		return ctx, nil
	}
	id, ok := ids[strings.TrimPrefix(vals[0], "bearer ")]
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "unknown token")
	}
	return auth.NewContext(ctx, id), nil
}

// ownership is the binary's write guard: the auth package's rules.
type ownership struct{}

func (ownership) CheckKeyWrite(ctx context.Context, key string) error {
	return auth.CheckKeyWrite(ctx, key)
}

func (ownership) CheckPrefixWrite(ctx context.Context, prefix string) error {
	return auth.CheckPrefixWrite(ctx, prefix)
}

var callers = identities{
	"host1":     {Name: "host1", Kind: auth.KindNode, Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}, Roles: []string{auth.RoleHost}},
	"host2":     {Name: "host2", Kind: auth.KindNode, Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}, Roles: []string{auth.RoleHost}},
	"notifier1": {Name: "notifier1", Kind: auth.KindNode, Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}, Roles: []string{auth.RoleNotifier}},
	"ops-read":  {Name: "ops-read", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeRead}},
	"ops-write": {Name: "ops-write", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}},
	"ops-admin": {Name: "ops-admin", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeAdmin}},
}

// as is a client of member i alone calling as the identity tok names,
// with unary appends. It retries on UNAVAILABLE, as every client does, so
// a busy machine's slow heartbeat does not fail the test.
func as(t *testing.T, c *cptest.Cluster, i int, tok string) *cpclient.Client {
	t.Helper()
	return c.Client(cpclient.Config{Endpoints: []string{c.Nodes[i].Addr}, Dial: grpcclient.Config{Auth: auth.BearerToken(tok)}, UnaryAppends: true})
}

// rawAs is as without retries, for the calls cpclient does not make.
func rawAs(t *testing.T, c *cptest.Cluster, i int, tok string) hivemindv1.ControlPlaneClient {
	t.Helper()
	conn, err := grpcclient.Dial(c.Nodes[i].Addr, grpcclient.Config{MaxRetries: -1, Auth: auth.BearerToken(tok)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return hivemindv1.NewControlPlaneClient(conn)
}

func follower(c *cptest.Cluster) int {
	lead := c.Leader()
	return (lead + 1) % len(c.Nodes)
}

// wantRefused checks err's code and that its message names every word in
// want (the field, and the reason).
func wantRefused(t *testing.T, what string, err error, code codes.Code, want ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
		return
	}
	for _, w := range want {
		if !strings.Contains(status.Convert(err).Message(), w) {
			t.Errorf("%s: %q does not say %q", what, status.Convert(err).Message(), w)
		}
	}
}

func startSecured(t *testing.T) *cptest.Cluster {
	return cptest.Start(t, 3, cptest.Options{Auth: callers, Guard: ownership{}})
}

// TestForgedEventsAreRefused replays the AppendEvent attacks of issue 13:
// events only the state machine may emit, and events in namespaces it or
// another node owns.
func TestForgedEventsAreRefused(t *testing.T) {
	c := startSecured(t)
	f := follower(c)
	host1 := as(t, c, f, "host1")
	if _, err := host1.Put(ctx(t), &hivemindv1.PutRequest{Key: "/nodes/host1/host", Value: []byte(`{"seq":1,"addrs":["10.0.0.1"]}`)}); err != nil {
		t.Fatal(err)
	}
	before, err := host1.Get(ctx(t), &hivemindv1.GetRequest{Key: "/nodes/host1/host"})
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name, tok string
		req       *hivemindv1.AppendEventRequest
		want      []string // the field and words of the reason
	}{
		{"kv.delete of another host's record", "host2",
			&hivemindv1.AppendEventRequest{Type: "kv.delete", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: "/nodes/host1/host"}, []string{"type", "kv.delete", "state machine"}},
		{"kv.delete by a write operator", "ops-write",
			&hivemindv1.AppendEventRequest{Type: "kv.delete", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: "/nodes/host1/host"}, []string{"type", "kv.delete"}},
		{"kv.put with a huge seq", "ops-write",
			&hivemindv1.AppendEventRequest{Type: "kv.put", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/nodes/host1/host", Payload: []byte(`{"seq":18446744073709551615,"addrs":["6.6.6.6"]}`)}, []string{"type", "kv.put"}},
		{"kv.put by the host itself", "host1",
			&hivemindv1.AppendEventRequest{Type: "kv.put", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/nodes/host1/host"}, []string{"type", "kv.put"}},
		{"member.failed with a spoofed source", "host2",
			&hivemindv1.AppendEventRequest{Type: "member.failed", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/members/host1", Source: "cp1"}, []string{"type", "member.failed"}},
		{"member.joined elsewhere", "ops-admin",
			&hivemindv1.AppendEventRequest{Type: "member.joined", Uri: "/app/x"}, []string{"type", "member.joined"}},
		{"intent.completed", "notifier1",
			&hivemindv1.AppendEventRequest{Type: "intent.completed", Uri: "/deliver/s/e"}, []string{"type", "intent.completed"}},
		{"cluster.compacted", "ops-admin",
			&hivemindv1.AppendEventRequest{Type: "cluster.compacted", Uri: "/cluster/epoch"}, []string{"type", "cluster.compacted"}},
		{"subscription change", "ops-write",
			&hivemindv1.AppendEventRequest{Type: "subscription.created", Uri: "/app/x"}, []string{"type", "subscription.created"}},
		{"a harmless type in the member registry", "ops-admin",
			&hivemindv1.AppendEventRequest{Type: "app.note", Uri: "/members/host1"}, []string{"uri", "/members/"}},
		{"app.note under the notifier's subscriptions", "ops-write",
			&hivemindv1.AppendEventRequest{Type: "app.note", Uri: "/notifier/subscriptions/hooks", Payload: []byte("not a subscription")}, []string{"uri", "/notifier/subscriptions/hooks", "Notifier API"}},
		{"app.note under /notifier/ by an admin", "ops-admin",
			&hivemindv1.AppendEventRequest{Type: "app.note", Uri: "/notifier/subscriptions/hooks"}, []string{"uri", "Notifier API"}},
		{"app.note under /notifier/ by a host", "host2",
			&hivemindv1.AppendEventRequest{Type: "app.note", Uri: "/notifier/x"}, []string{"uri"}},
		{"another node's part of the tree", "host2",
			&hivemindv1.AppendEventRequest{Type: "host.updated", Uri: "/nodes/host1/host"}, []string{"uri", "/nodes/host1/host", "host2"}},
		{"a node's name as a prefix of another's", "host2",
			&hivemindv1.AppendEventRequest{Type: "host.updated", Uri: "/nodes/host2x/host"}, []string{"uri"}},
		{"a node's part of the tree by a write operator", "ops-write",
			&hivemindv1.AppendEventRequest{Type: "host.updated", Uri: "/nodes/host1/host"}, []string{"uri", "admin"}},
	}
	for _, r := range refused {
		_, err := as(t, c, f, r.tok).AppendEvent(ctx(t), r.req)
		wantRefused(t, r.name, err, codes.PermissionDenied, r.want...)
	}
	after, err := host1.Get(ctx(t), &hivemindv1.GetRequest{Key: "/nodes/host1/host"})
	if err != nil {
		t.Fatal(err)
	}
	if after.GetHeader().GetRevision() != before.GetHeader().GetRevision() {
		t.Fatalf("revision moved from %d to %d: a refused append was applied", before.GetHeader().GetRevision(), after.GetHeader().GetRevision())
	}

	allowed := []struct {
		name, tok string
		req       *hivemindv1.AppendEventRequest
	}{
		{"a node under its own part", "host2", &hivemindv1.AppendEventRequest{Type: "host.updated", Uri: "/nodes/host2/host"}},
		{"a node on its own subtree's root", "host2", &hivemindv1.AppendEventRequest{Type: "host.updated", Uri: "/nodes/host2"}},
		{"an admin under a node's part", "ops-admin", &hivemindv1.AppendEventRequest{Type: "host.note", Uri: "/nodes/host1/host"}},
		{"the notifier under /notifier/", "notifier1", &hivemindv1.AppendEventRequest{Type: "notifier.note", Uri: "/notifier/status"}},
		{"a type that merely starts like a reserved one", "ops-write", &hivemindv1.AppendEventRequest{Type: "kvstore.put", Uri: "/app/x"}},
		{"no uri", "ops-write", &hivemindv1.AppendEventRequest{Type: "app.note"}},
	}
	for _, a := range allowed {
		if _, err := as(t, c, f, a.tok).AppendEvent(ctx(t), a.req); err != nil {
			t.Errorf("%s: %v", a.name, err)
		}
	}
}

// TestAppendedEventSourceIsTheCaller: the source of an appended event names
// who appended it, whatever the request says, on the leader and through a
// follower that forwards it.
func TestAppendedEventSourceIsTheCaller(t *testing.T) {
	c := startSecured(t)
	lead := c.Leader()
	for _, tc := range []struct {
		tok, want string
		member    int
	}{
		{"host2", "host2", follower(c)},
		{"host2", "host2", lead},
		{"ops-write", "operator:ops-write", follower(c)},
		{"ops-admin", "operator:ops-admin", lead},
	} {
		resp, err := as(t, c, tc.member, tc.tok).AppendEvent(ctx(t), &hivemindv1.AppendEventRequest{Type: "app.note", Uri: "/app/x", Source: "cp1"})
		if err != nil {
			t.Fatalf("%s: %v", tc.tok, err)
		}
		if got := resp.GetEvent().GetSource(); got != tc.want {
			t.Errorf("%s on member %d: source %q, want %q", tc.tok, tc.member, got, tc.want)
		}
		// What every replica stored, not only what the answer says.
		for i := range c.Nodes {
			rev := resp.GetEvent().GetRevision()
			c.WaitFor("the append on every member", 5*time.Second, func() bool { return c.Nodes[i].Replica.Machine().Revision() >= rev })
			evs, err := c.Nodes[i].Replica.Machine().EventsFrom(rev, 1)
			if err != nil || len(evs) != 1 || evs[0].GetSource() != tc.want {
				t.Errorf("%s: member %d stored %v (%v), want source %q", tc.tok, i, evs, err, tc.want)
			}
		}
	}
}

// TestAppendEventsAnswersEachMessageOnItsOwn: a refused message on a stream
// is answered with its code and does not stop the others.
func TestAppendEventsAnswersEachMessageOnItsOwn(t *testing.T) {
	c := startSecured(t)
	stream, err := rawAs(t, c, follower(c), "host2").AppendEvents(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	reqs := map[uint64]*hivemindv1.AppendEventRequest{
		1: {Type: "host.updated", Uri: "/nodes/host2/host", Source: "cp1"},
		2: {Type: "kv.delete", Uri: "/nodes/host1/host"},
		3: {Type: "app.note", Uri: "/nodes/host1/x"},
		4: {Type: "app.note", Uri: "/notifier/subscriptions/x"},
		5: {Type: "app.note", Uri: "/app/y"},
	}
	want := map[uint64]codes.Code{1: codes.OK, 2: codes.PermissionDenied, 3: codes.PermissionDenied, 4: codes.PermissionDenied, 5: codes.OK}
	for seq, r := range reqs {
		if err := stream.Send(&hivemindv1.AppendEventsRequest{Seq: seq, Event: r}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for range reqs {
		a, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if codes.Code(a.GetCode()) != want[a.GetSeq()] {
			t.Errorf("message %d: %s %q, want %s", a.GetSeq(), codes.Code(a.GetCode()), a.GetMessage(), want[a.GetSeq()])
		}
		if a.GetCode() == 0 && a.GetAppended().GetEvent().GetSource() != "host2" {
			t.Errorf("message %d: source %q, want host2", a.GetSeq(), a.GetAppended().GetEvent().GetSource())
		}
	}
}

// TestNotifierNamespaceIsTheNotifiers: only notifier nodes write under
// /notifier/; subscriptions are managed through the Notifier API.
func TestNotifierNamespaceIsTheNotifiers(t *testing.T) {
	c := startSecured(t)
	f := follower(c)
	notifier := as(t, c, f, "notifier1")
	if _, err := notifier.Put(ctx(t), &hivemindv1.PutRequest{Key: "/notifier/subscriptions/hooks", Value: []byte(`{"target":"https://example.com"}`)}); err != nil {
		t.Fatalf("the notifier writing a subscription: %v", err)
	}
	for _, tok := range []string{"ops-write", "ops-admin", "host2"} {
		cl := as(t, c, f, tok)
		_, err := cl.Put(ctx(t), &hivemindv1.PutRequest{Key: "/notifier/subscriptions/hooks", Value: []byte("{}")})
		wantRefused(t, tok+" put", err, codes.PermissionDenied, "/notifier/subscriptions/hooks", "Notifier API")
		_, err = cl.Delete(ctx(t), &hivemindv1.DeleteRequest{Key: "/notifier/subscriptions/hooks"})
		wantRefused(t, tok+" delete", err, codes.PermissionDenied, "/notifier/subscriptions/hooks")
		_, err = cl.Delete(ctx(t), &hivemindv1.DeleteRequest{Key: "/no", Prefix: true})
		wantRefused(t, tok+" prefix delete covering /notifier/", err, codes.PermissionDenied, "/no")
		_, err = cl.Txn(ctx(t), &hivemindv1.TxnRequest{Failure: []*hivemindv1.TxnOp{
			{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: "/notifier/secrets/hooks", Value: []byte("mine")}}},
		}})
		wantRefused(t, tok+" txn", err, codes.PermissionDenied, "/notifier/secrets/hooks")
	}
	got, err := notifier.Get(ctx(t), &hivemindv1.GetRequest{Key: "/notifier/subscriptions/hooks"})
	if err != nil || string(got.GetKv().GetValue()) != `{"target":"https://example.com"}` {
		t.Fatalf("the subscription after refused writes: %v %v", got, err)
	}
}

// TestSubscriptionSecretsAreHidden: a signing secret is read only by admins
// and notifier nodes; to everyone else it does not exist.
func TestSubscriptionSecretsAreHidden(t *testing.T) {
	c := startSecured(t)
	f := follower(c)
	notifier := as(t, c, f, "notifier1")
	const secretKey, secretValue = "/notifier/secrets/hooks", "whsec-do-not-leak"
	start, err := notifier.Put(ctx(t), &hivemindv1.PutRequest{Key: "/notifier/subscriptions/hooks", Value: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := notifier.Put(ctx(t), &hivemindv1.PutRequest{Key: secretKey, Value: []byte(secretValue)}); err != nil {
		t.Fatal(err)
	}
	last, err := notifier.AppendEvent(ctx(t), &hivemindv1.AppendEventRequest{Type: "notifier.rotated", Uri: secretKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"ops-admin", "notifier1"} {
		got, err := as(t, c, f, tok).Get(ctx(t), &hivemindv1.GetRequest{Key: secretKey})
		if err != nil || !got.GetFound() || string(got.GetKv().GetValue()) != secretValue {
			t.Errorf("%s reading the secret: %v %v", tok, got, err)
		}
	}
	for _, tok := range []string{"ops-read", "ops-write", "host2"} {
		cl := as(t, c, f, tok)
		got, err := cl.Get(ctx(t), &hivemindv1.GetRequest{Key: secretKey})
		if err != nil || got.GetFound() || got.GetKv() != nil {
			t.Errorf("%s get: %v %v, want not found", tok, got, err)
		}
		rng, err := cl.Range(ctx(t), &hivemindv1.RangeRequest{Prefix: "/notifier/"})
		if err != nil || len(rng.GetKvs()) != 1 || rng.GetKvs()[0].GetKey() != "/notifier/subscriptions/hooks" {
			t.Errorf("%s range: %v %v, want the subscription alone", tok, rng, err)
		}
		if tok != "ops-read" {
			txn, err := cl.Txn(ctx(t), &hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Get{Get: &hivemindv1.TxnGet{Key: secretKey}}}}})
			if err != nil || len(txn.GetResults()) != 1 || txn.GetResults()[0].GetKv() != nil {
				t.Errorf("%s txn get: %v %v, want nothing", tok, txn, err)
			}
			_, err = cl.Txn(ctx(t), &hivemindv1.TxnRequest{Compares: []*hivemindv1.Compare{{Key: secretKey, Target: hivemindv1.Compare_TARGET_VALUE, Result: hivemindv1.Compare_RESULT_GREATER, Value: []byte("m")}}})
			wantRefused(t, tok+" txn compare on the secret", err, codes.PermissionDenied, "compares[0].key")
		}
		// A watch from before the secret was written sees the subscription
		// and then nothing: not the put, not the appended event; a progress
		// notification tells it everything up to the last revision was sent.
		wctx, cancel := context.WithTimeout(ctx(t), 10*time.Second)
		var seen []string
		caughtUp := errors.New("caught up")
		err = cl.Watch(wctx, &hivemindv1.WatchRequest{Prefix: "/notifier/", StartRevision: start.GetHeader().GetRevision(), ProgressInterval: durationpb.New(100 * time.Millisecond)}, func(resp *hivemindv1.WatchResponse) error {
			for _, e := range resp.GetEvents() {
				seen = append(seen, e.GetType()+" "+e.GetUri())
				if strings.Contains(string(e.GetPayload()), secretValue) || strings.Contains(string(e.GetKv().GetValue()), secretValue) {
					t.Errorf("%s watch: the secret in %v", tok, e)
				}
			}
			if resp.GetProgress() && resp.GetHeader().GetRevision() >= last.GetHeader().GetRevision() {
				return caughtUp
			}
			return nil
		})
		cancel()
		if !errors.Is(err, caughtUp) {
			t.Errorf("%s watch: %v, want a progress notification at revision %d", tok, err, last.GetHeader().GetRevision())
		}
		if len(seen) != 1 || seen[0] != "kv.put /notifier/subscriptions/hooks" {
			t.Errorf("%s watch delivered %v, want the subscription's put alone", tok, seen)
		}
	}
}

// TestClientClockIsBounded: a writer's hlc far ahead of the leader's clock
// is refused, so a write stamped at the end of time cannot make a node's
// own later writes to its key lose forever.
func TestClientClockIsBounded(t *testing.T) {
	c := startSecured(t)
	host1 := as(t, c, follower(c), "host1")
	const key = "/nodes/host1/host"
	_, err := host1.Put(ctx(t), &hivemindv1.PutRequest{Key: key, Value: []byte("forged"), Hlc: math.MaxUint64})
	wantRefused(t, "put stamped 2^64-1", err, codes.InvalidArgument, "hlc", "ahead")
	resp, err := host1.Put(ctx(t), &hivemindv1.PutRequest{Key: key, Value: []byte("real"), Hlc: uint64(hlc.FromTime(time.Now()))})
	if err != nil || !resp.GetApplied() {
		t.Fatalf("the node's own write after a write stamped 2^64-1: %v %v", resp, err)
	}
	for _, tc := range []struct {
		name string
		call func(stamp uint64) error
	}{
		{"put", func(stamp uint64) error {
			_, err := host1.Put(ctx(t), &hivemindv1.PutRequest{Key: key, Value: []byte("forged"), Hlc: stamp})
			return err
		}},
		{"delete", func(stamp uint64) error {
			_, err := host1.Delete(ctx(t), &hivemindv1.DeleteRequest{Key: key, Hlc: stamp})
			return err
		}},
	} {
		for _, stamp := range []uint64{math.MaxUint64, uint64(hlc.FromTime(time.Now().Add(2 * time.Minute)))} {
			wantRefused(t, tc.name, tc.call(stamp), codes.InvalidArgument, "hlc", "ahead")
		}
	}
	resp, err = host1.Put(ctx(t), &hivemindv1.PutRequest{Key: key, Value: []byte("real"), Hlc: uint64(hlc.FromTime(time.Now()))})
	if err != nil || !resp.GetApplied() || string(resp.GetKv().GetValue()) != "real" {
		t.Fatalf("the node's own write after the refused ones: %v %v", resp, err)
	}
	// Within the bound, a little ahead, is a clock that is merely fast.
	resp, err = host1.Put(ctx(t), &hivemindv1.PutRequest{Key: key, Value: []byte("fast"), Hlc: uint64(hlc.FromTime(time.Now().Add(20 * time.Second)))})
	if err != nil || !resp.GetApplied() {
		t.Fatalf("a write 20s ahead: %v %v", resp, err)
	}
}
