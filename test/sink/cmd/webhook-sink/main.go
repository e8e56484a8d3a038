// Command webhook-sink is a webhook receiver for end-to-end tests: it
// accepts every POST, checks its Standard Webhooks signature with the
// configured secret (its own implementation of the scheme, independent of
// the notifier's), and lists what it received at GET /received:
//
//	[{"webhook_id":"msg_…","timestamp":"…","signature_verified":true,
//	  "path":"/hook","body":{…},"received_at":"…"}, …]
//
// Repeats of a webhook-id are recorded as they come, so a test can count
// them.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hivemind/hivemind/test/sink/record"
)

// hook is one request as received.
type hook struct {
	WebhookID string          `json:"webhook_id"`
	Timestamp string          `json:"timestamp"`
	Verified  bool            `json:"signature_verified"`
	Path      string          `json:"path"`
	Body      json.RawMessage `json:"body"`
	Received  time.Time       `json:"received_at"`
}

// receiver records webhooks and verifies their signatures.
type receiver struct {
	key []byte
	log record.Log[hook]
}

// verify checks the webhook-signature header, which may hold several
// space-separated signatures, against HMAC-SHA256(key, id.timestamp.body).
func (rc *receiver) verify(id, ts, sigs string, body []byte) bool {
	if len(rc.key) == 0 {
		return false
	}
	m := hmac.New(sha256.New, rc.key)
	io.WriteString(m, id+"."+ts+".")
	m.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h := hook{
		WebhookID: r.Header.Get("webhook-id"), Timestamp: r.Header.Get("webhook-timestamp"),
		Path: r.URL.Path, Received: time.Now().UTC(),
	}
	h.Verified = rc.verify(h.WebhookID, h.Timestamp, r.Header.Get("webhook-signature"), body)
	if json.Valid(body) {
		h.Body = body
	} else {
		h.Body, _ = json.Marshal(string(body))
	}
	rc.log.Add(h)
	w.WriteHeader(http.StatusNoContent)
}

func main() {
	addr := flag.String("listen", ":8080", "address to listen on: POST anywhere delivers, GET /received lists")
	secret := flag.String("secret", os.Getenv("WEBHOOK_SINK_SECRET"), "the subscriptions' signing secret, whsec_<base64> (default $WEBHOOK_SINK_SECRET)")
	flag.Parse()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(*secret, "whsec_"))
	if err != nil {
		log.Fatalf("webhook-sink: -secret: %v", err)
	}
	rc := &receiver{key: key}
	mux := http.NewServeMux()
	mux.Handle("GET /received", &rc.log)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("/", rc)
	log.Printf("webhook-sink listening on %s", *addr)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
