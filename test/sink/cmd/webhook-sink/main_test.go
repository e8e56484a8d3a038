package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The signature below was computed for this id, timestamp and body with
// the key "secret" (base64 c2VjcmV0) by the Standard Webhooks formula,
// HMAC-SHA256 over "id.timestamp.body", in another tool (openssl).
func TestReceiverVerifies(t *testing.T) {
	rc := &receiver{key: []byte("secret")}
	post := func(sig string) hook {
		req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(`{"a":1}`))
		req.Header.Set("webhook-id", "msg_1")
		req.Header.Set("webhook-timestamp", "1700000000")
		req.Header.Set("webhook-signature", sig)
		w := httptest.NewRecorder()
		rc.ServeHTTP(w, req)
		if w.Code != http.StatusNoContent {
			t.Fatalf("POST answered %d", w.Code)
		}
		items := rc.log.Items()
		return items[len(items)-1]
	}
	good := "v1,Q5nZ7DiOGwijBBqvBVAK6c0zDr2JLkXI7TaV4f+Q2vY="
	if h := post("v1,bad " + good); !h.Verified || h.WebhookID != "msg_1" || h.Path != "/hook" {
		t.Errorf("good signature (second of two): %+v", h)
	}
	if h := post("v1,AAAA"); h.Verified {
		t.Errorf("bad signature verified: %+v", h)
	}

	w := httptest.NewRecorder()
	rc.log.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/received", nil))
	var got []map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || len(got) != 2 {
		t.Fatalf("GET /received: %s (%v)", w.Body, err)
	}
	if body, _ := got[0]["body"].(map[string]any); body["a"] != float64(1) {
		t.Errorf("body not kept as JSON: %v", got[0])
	}
}
