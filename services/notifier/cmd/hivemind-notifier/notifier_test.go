package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// hook is one webhook request as the receiver saw it.
type hook struct {
	id       string
	verified bool
	body     map[string]any
}

// TestNotifierBinary is the smoke test of the real binary: a control
// plane and a notifier process, a subscription created over gRPC with the
// operator token, a key written, and the signed webhook received by an
// HTTP server that checks the signature with its own HMAC.
func TestNotifierBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	var mu sync.Mutex
	var got []hook
	var secret []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
		mu.Lock()
		defer mu.Unlock()
		m := hmac.New(sha256.New, secret)
		io.WriteString(m, id+"."+ts+".")
		m.Write(body)
		want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
		h := hook{id: id}
		for _, s := range strings.Fields(r.Header.Get("webhook-signature")) {
			h.verified = h.verified || hmac.Equal([]byte(s), []byte(want))
		}
		_ = json.Unmarshal(body, &h.body)
		got = append(got, h)
	}))
	t.Cleanup(srv.Close)

	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1})
	c.Add("notifier1", "notifier", "--egress-allow-loopback", "--lease", "5s")
	c.WaitHealthy("notifier1", 30*time.Second)
	api := hivemindv1.NewNotifierClient(c.Dial("notifier1"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	resp, err := api.CreateSubscription(ctx, &hivemindv1.CreateSubscriptionRequest{Subscription: &hivemindv1.Subscription{
		Name: "smoke", Target: srv.URL + "/hook", Prefix: "/app/smoke/",
		Hooks: []hivemindv1.Hook{hivemindv1.Hook_HOOK_CREATE},
	}})
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(resp.GetSubscription().GetSecret(), "whsec_"))
	if err != nil || len(key) == 0 {
		t.Fatalf("CreateSubscription answered secret %q (%v), want whsec_<base64>", resp.GetSubscription().GetSecret(), err)
	}
	mu.Lock()
	secret = key
	mu.Unlock()

	put, err := c.ControlPlane().Put(ctx, &hivemindv1.PutRequest{Key: "/app/smoke/greeting", Value: []byte(`{"hello":"world"}`)})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the webhook", 20*time.Second, func(context.Context) bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0
	})
	mu.Lock()
	h := got[0]
	mu.Unlock()
	if !h.verified {
		t.Errorf("webhook %s: the signature does not verify", h.id)
	}
	for field, want := range map[string]any{"name": "smoke", "what": "created", "uri": "/app/smoke/greeting", "revision": float64(put.GetHeader().GetRevision())} {
		if h.body[field] != want {
			t.Errorf("webhook body %s = %v, want %v (body %v)", field, h.body[field], want, h.body)
		}
	}

	// The attempt is visible through the API of the same binary.
	c.WaitFor("a delivered record", 10*time.Second, func(ctx context.Context) bool {
		ds, err := api.ListDeliveries(ctx, &hivemindv1.ListDeliveriesRequest{Subscription: "smoke"})
		return err == nil && len(ds.GetDeliveries()) == 1 && ds.GetDeliveries()[0].GetState() == "delivered" &&
			ds.GetDeliveries()[0].GetId() == h.id
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Errorf("%d webhooks, want 1", len(got))
	}
}
