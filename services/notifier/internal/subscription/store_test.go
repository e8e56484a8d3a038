package subscription_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// On a real control plane: the record is stored without its secret, the
// secret at /notifier/secrets/<name>, both in one revision; reads put them
// back together; a record stored the old way (secret inline) still loads;
// Disable keeps the secret out of the record; Delete removes both at once.
func TestStoreKeepsSecretsApart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1})
	// The store writes as a notifier node does: /notifier/ is theirs.
	c.JoinAs("notifier1", auth.RoleNotifier)
	cp := c.ControlPlaneAs("notifier1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := subscription.NewStore(cp)

	sub := &hivemindv1.Subscription{Name: "web", Target: "https://hooks.example.com/x", Prefix: "/srv/", Secret: "whsec_c2VjcmV0"}
	rev, err := st.Create(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	recResp, err := cp.Get(ctx, &hivemindv1.GetRequest{Key: subscription.Key("web")})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := subscription.Unmarshal(recResp.GetKv().GetValue())
	if err != nil || rec.GetSecret() != "" || rec.GetTarget() != sub.GetTarget() {
		t.Fatalf("stored record %v (%v): want it without the secret", rec, err)
	}
	secResp, err := cp.Get(ctx, &hivemindv1.GetRequest{Key: subscription.SecretKey("web")})
	if err != nil || string(secResp.GetKv().GetValue()) != sub.GetSecret() {
		t.Fatalf("secret key: %v, %v", secResp, err)
	}
	if recResp.GetKv().GetModRevision() != rev || secResp.GetKv().GetModRevision() != rev {
		t.Errorf("record at %d and secret at %d, want both at the create's revision %d", recResp.GetKv().GetModRevision(), secResp.GetKv().GetModRevision(), rev)
	}
	got, _, err := st.Get(ctx, "web")
	if err != nil || !proto.Equal(got, sub) {
		t.Errorf("Get: %v (%v), want %v", got, err, sub)
	}

	// A record from before the split, written as it was then.
	old := &hivemindv1.Subscription{Name: "old", Target: "https://hooks.example.com/y", Prefix: "/app/", Secret: "whsec_b2xk"}
	b, _ := proto.Marshal(old)
	if _, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: subscription.Key("old"), Value: b}); err != nil {
		t.Fatal(err)
	}
	subs, _, _, err := st.List(ctx)
	if err != nil || len(subs) != 2 || subs[0].GetSecret() != "whsec_b2xk" || subs[1].GetSecret() != "whsec_c2VjcmV0" {
		t.Fatalf("List: %v, %v", subs, err)
	}

	// The notifier moves the inline secret out; reads do not change.
	if n, err := st.MoveInlineSecrets(ctx); err != nil || n != 1 {
		t.Fatalf("MoveInlineSecrets: %d, %v; want 1 moved", n, err)
	}
	recResp, _ = cp.Get(ctx, &hivemindv1.GetRequest{Key: subscription.Key("old")})
	if rec, _ := subscription.Unmarshal(recResp.GetKv().GetValue()); rec.GetSecret() != "" || rec.GetTarget() != old.GetTarget() {
		t.Errorf("old record after the move: %v", rec)
	}
	if got, _, err := st.Get(ctx, "old"); err != nil || !proto.Equal(got, old) {
		t.Errorf("old subscription after the move: %v (%v), want %v", got, err, old)
	}
	if n, err := st.MoveInlineSecrets(ctx); err != nil || n != 0 {
		t.Errorf("MoveInlineSecrets again: %d, %v; want nothing to move", n, err)
	}

	if err := st.Disable(ctx, "web", "gone"); err != nil {
		t.Fatal(err)
	}
	recResp, _ = cp.Get(ctx, &hivemindv1.GetRequest{Key: subscription.Key("web")})
	if rec, _ := subscription.Unmarshal(recResp.GetKv().GetValue()); !rec.GetDisabled() || rec.GetSecret() != "" {
		t.Errorf("disabled record %v: want disabled, without the secret", rec)
	}
	if got, _, _ := st.Get(ctx, "web"); got.GetSecret() != sub.GetSecret() {
		t.Errorf("secret after Disable: %q", got.GetSecret())
	}

	delRev, err := st.Delete(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	secResp, err = cp.Get(ctx, &hivemindv1.GetRequest{Key: subscription.SecretKey("web")})
	if err != nil || secResp.GetFound() {
		t.Errorf("secret after Delete: %v, %v", secResp, err)
	}
	if _, _, err := st.Get(ctx, "web"); !errors.Is(err, subscription.ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	// Both went in the delete's revision.
	var seen []string
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	_ = cp.Watch(wctx, &hivemindv1.WatchRequest{StartRevision: delRev, Prefix: "/notifier/"}, func(r *hivemindv1.WatchResponse) error {
		for _, ev := range r.GetEvents() {
			if ev.GetRevision() == delRev && ev.GetType() == "kv.delete" {
				seen = append(seen, ev.GetUri())
			}
		}
		if len(r.GetEvents()) > 0 {
			wcancel()
		}
		return nil
	})
	if len(seen) != 2 || seen[0] != subscription.Key("web") || seen[1] != subscription.SecretKey("web") {
		t.Errorf("deleted in revision %d: %v, want the record and the secret", delRev, seen)
	}
}
