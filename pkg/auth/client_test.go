package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/secret"
)

func TestNodeAuthRefreshesBeforeExpiryAndRetriesARefusedToken(t *testing.T) {
	serverClock, clientClock := newClock(), newClock()
	ts := startServer(t, testSecretA, nil, serverClock.Now)
	na := NewNodeAuth("host-1", mustSecret(t, testSecretA), testKey)
	na.now = clientClock.Now
	conn, err := grpcclient.Dial(ts.addr, grpcclient.Config{MaxRetries: -1, Auth: na})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	api := hivemindv1.NewNodeClient(conn)
	info := func(wantHandshakes int32) {
		t.Helper()
		if _, err := api.Info(ctx, &hivemindv1.InfoRequest{}); err != nil {
			t.Fatal(err)
		}
		if n := ts.auth.n.Load(); n != wantHandshakes {
			t.Fatalf("%d handshakes, want %d", n, wantHandshakes)
		}
	}
	info(1)
	info(1) // the token is reused
	// Concurrent first calls on a fresh session share one handshake.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { _, _ = api.Info(ctx, &hivemindv1.InfoRequest{}) })
	}
	wg.Wait()
	info(1)

	// Past two thirds of its life the token is refreshed, before expiry.
	serverClock.Add(DefaultTokenTTL * 2 / 3)
	clientClock.Add(DefaultTokenTTL * 2 / 3)
	info(2)

	// The server's clock runs ahead and refuses the token the client still
	// thinks good: one new handshake, and the call succeeds.
	serverClock.Add(DefaultTokenTTL)
	info(3)
}

func TestNodeAuthGivesUpWhenTheServerStillRefuses(t *testing.T) {
	// A server whose policy refuses nodes: the call fails once re-tried,
	// without looping.
	ts := startServer(t, testSecretA, nil, nil)
	ts.authn.Policy().Set(hivemindv1.Node_Info_FullMethodName, NeedAdmin)
	conn, err := grpcclient.Dial(ts.addr, grpcclient.Config{MaxRetries: -1, Auth: NewNodeAuth("host-1", mustSecret(t, testSecretA), testKey)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = hivemindv1.NewNodeClient(conn).Info(context.Background(), &hivemindv1.InfoRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("%v, want PERMISSION_DENIED", err)
	}
}

// recorder is a TCP proxy that keeps every byte of every connection, each
// direction apart so the HTTP/2 frames can be decoded afterwards.
type recorder struct {
	lis  net.Listener
	mu   sync.Mutex
	bufs []*bytes.Buffer
}

func newRecorder(t *testing.T, target string) *recorder {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{lis: lis}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go r.pipe(c, s, r.newBuf())
			go r.pipe(s, c, r.newBuf())
		}
	}()
	return r
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (r *recorder) newBuf() lockedBuf {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := &bytes.Buffer{}
	r.bufs = append(r.bufs, b)
	return lockedBuf{mu: &r.mu, b: b}
}

func (r *recorder) pipe(from, to net.Conn, rec io.Writer) {
	// Recorded before it is passed on: once a call has been answered, its
	// request is in the recording (forwarding first let the test read the
	// recording before the last request was written to it).
	_, _ = io.Copy(io.MultiWriter(rec, to), from)
	from.Close()
	to.Close()
}

// wire returns every byte recorded, and the same traffic decoded: HTTP/2
// header fields (HPACK, which may Huffman-code a value and so hide it from
// a byte search) as "name: value" lines, and DATA payloads.
func (r *recorder) wire(t *testing.T) (raw, decoded []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out bytes.Buffer
	for _, b := range r.bufs {
		raw = append(raw, b.Bytes()...)
		data := bytes.TrimPrefix(b.Bytes(), []byte(http2.ClientPreface))
		fr := http2.NewFramer(nil, bytes.NewReader(data))
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("decode recorded HTTP/2: %v", err)
				}
				break
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				for _, h := range f.Fields {
					fmt.Fprintf(&out, "%s: %s\n", h.Name, h.Value)
				}
			case *http2.DataFrame:
				out.Write(f.Data())
			}
		}
	}
	return raw, out.Bytes()
}

func TestTheSecretNeverCrossesTheWire(t *testing.T) {
	ts := startServer(t, testSecretA, nil, nil)
	rec := newRecorder(t, ts.addr)
	conn, err := grpcclient.Dial(rec.lis.Addr().String(), grpcclient.Config{MaxRetries: -1, Auth: NewNodeAuth("host-1", mustSecret(t, testSecretA), testKey)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if _, err := hivemindv1.NewNodeClient(conn).Info(ctx, &hivemindv1.InfoRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()

	raw, decoded := rec.wire(t)
	// The recording is real: the handshake and the token went through it.
	for _, want := range []string{":path: /hivemind.v1.Auth/Challenge", ":path: /hivemind.v1.Auth/Authenticate", ":path: /hivemind.v1.Node/Info", "host-1", "authorization: bearer " + tokenPrefix} {
		if !bytes.Contains(decoded, []byte(want)) {
			t.Fatalf("recording lacks %q:\n%q", want, decoded)
		}
	}
	if n := bytes.Count(decoded, []byte("authorization: bearer")); n != 3 {
		t.Fatalf("%d calls carried a token, want 3", n)
	}
	sec := mustSecret(t, testSecretA)
	forbidden := map[string][]byte{"secret": []byte(testSecretA)}
	for _, p := range []string{secret.PurposeHandshake, secret.PurposeToken, secret.PurposeGossip} {
		forbidden["key "+p] = sec.Key(p)
	}
	for what, b := range forbidden {
		for enc, s := range map[string][]byte{
			"raw":       b,
			"hex":       []byte(hex.EncodeToString(b)),
			"HEX":       bytes.ToUpper([]byte(hex.EncodeToString(b))),
			"base64":    []byte(base64.StdEncoding.EncodeToString(b)),
			"base64raw": []byte(base64.RawStdEncoding.EncodeToString(b)),
			"base64url": []byte(base64.RawURLEncoding.EncodeToString(b)),
		} {
			// Twelve characters are enough to call it a leak, and catch a
			// truncated copy too.
			for _, wire := range [][]byte{raw, decoded} {
				if bytes.Contains(wire, s[:min(len(s), 12)]) {
					t.Errorf("the %s (%s) appears on the wire", what, enc)
				}
			}
		}
	}
}

func TestCallSessionsShareAConnectionEachWithItsOwnToken(t *testing.T) {
	ts := startServer(t, testSecretA, nil, nil)
	conn, err := grpcclient.Dial(ts.addr, grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	api := hivemindv1.NewNodeClient(conn)
	member := NewNodeAuth("host-1", mustSecret(t, testSecretA), testKey).Session(conn)
	joining := NewNodeAuth("host-2", mustSecret(t, testSecretA), NewNodeKey()).Session(conn)

	cctx, tok, err := member.Context(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.Info(cctx, &hivemindv1.InfoRequest{}); err != nil {
		t.Fatalf("host-1 with its own token: %v", err)
	}
	if _, again, _ := member.Context(ctx); again != tok || ts.auth.n.Load() != 1 {
		t.Fatalf("token reused: %v, handshakes %d; want the same token and 1", again == tok, ts.auth.n.Load())
	}
	// host-2 is not bound: over the same connection its token admits it to
	// Join only.
	jctx, jtok, err := joining.Context(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if jtok == tok {
		t.Fatal("two nodes got the same token")
	}
	if n := ts.auth.n.Load(); n != 2 {
		t.Fatalf("%d handshakes, want 2 (one per node)", n)
	}
	if _, err := api.Info(jctx, &hivemindv1.InfoRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("host-2 before joining: %v, want UNAUTHENTICATED", err)
	}
	// A refused token is dropped: the next Context handshakes again (the
	// token it gets may be equal: tokens issued to one identity within the
	// same second are).
	member.Refused(tok)
	if _, _, err := member.Context(ctx); err != nil || ts.auth.n.Load() != 3 {
		t.Fatalf("after Refused: err %v, handshakes %d; want 3", err, ts.auth.n.Load())
	}
}
