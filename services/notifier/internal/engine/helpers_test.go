package engine_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/webhook"
)

// receiver is a webhook endpoint that checks every signature with its
// own implementation of the Standard Webhooks scheme and counts ids.
type receiver struct {
	t      testing.TB
	key    []byte
	status func(eventID string) int

	mu      sync.Mutex
	byID    map[string]int // webhook-id → requests
	events  map[string]bool
	badSigs int
	changed chan struct{}
}

func newReceiver(t testing.TB, secret string) *receiver {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	return &receiver{t: t, key: key, byID: map[string]int{}, events: map[string]bool{}, changed: make(chan struct{}, 1)}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	m := hmac.New(sha256.New, rc.key)
	io.WriteString(m, id+"."+ts+".")
	m.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	var b struct {
		EventID string `json:"event_id"`
		What    string `json:"what"`
		URI     string `json:"uri"`
		Name    string `json:"name"`
	}
	_ = json.Unmarshal(body, &b)
	rc.mu.Lock()
	ok := false
	for _, s := range strings.Fields(r.Header.Get("webhook-signature")) {
		ok = ok || hmac.Equal([]byte(s), []byte(want))
	}
	if !ok || b.EventID == "" || b.What == "" || b.URI == "" || b.Name == "" {
		rc.badSigs++
	}
	code := http.StatusOK
	if rc.status != nil {
		code = rc.status(b.EventID)
	}
	if code == http.StatusOK {
		rc.byID[id]++
		rc.events[b.EventID] = true
	}
	rc.mu.Unlock()
	select {
	case rc.changed <- struct{}{}:
	default:
	}
	w.WriteHeader(code)
}

// counts returns distinct events received, repeated ids and bad requests.
func (rc *receiver) counts() (events, repeats, bad int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, n := range rc.byID {
		repeats += n - 1
	}
	return len(rc.events), repeats, rc.badSigs
}

// proxy forwards TCP to a target until cut; a cut closes every
// connection and refuses new ones until healed, like a network partition
// between one notifier and the control plane.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// webhooks is a set of channels with the webhook channel alone.
func webhooks(s *webhook.Sender) *delivery.Channels {
	c := delivery.NewChannels()
	c.Register(webhook.NewChannel(s), "http", "https")
	return c
}
