package tlsconfig

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/devca"
)

// handshake runs a TLS handshake between ServerConfig(srv) and
// ClientConfig(cli) for serverName.
func handshake(t *testing.T, srv, cli Files, serverName string) error {
	t.Helper()
	scfg, err := ServerConfig(srv)
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := ClientConfig(cli)
	if err != nil {
		t.Fatal(err)
	}
	ccfg.ServerName = serverName
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(a, scfg)
		errc <- s.HandshakeContext(ctx)
		s.Close()
	}()
	c := tls.Client(b, ccfg)
	cerr := c.HandshakeContext(ctx)
	if cerr == nil {
		// TLS 1.3 reports a refused client certificate on the first read.
		_, cerr = c.Read(make([]byte, 1))
		if cerr != nil && cerr.Error() == "EOF" {
			cerr = nil
		}
	}
	c.Close()
	serr := <-errc
	if serr != nil {
		return serr
	}
	return cerr
}

func TestMutualTLSAndCAOnlyClients(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	if err := devca.WriteDir(dir, []string{"n1", "n2"}); err != nil {
		t.Fatal(err)
	}
	if err := devca.WriteDir(other, []string{"n2"}); err != nil {
		t.Fatal(err)
	}
	f := func(d, node string) Files {
		return Files{Cert: filepath.Join(d, node+".pem"), Key: filepath.Join(d, node+"-key.pem"), CA: filepath.Join(d, "ca.pem")}
	}
	srv := f(dir, "n1")
	if err := handshake(t, srv, f(dir, "n2"), "n1"); err != nil {
		t.Fatalf("node with its certificate: %v", err)
	}
	if err := handshake(t, srv, Files{CA: srv.CA}, "127.0.0.1"); err != nil {
		t.Fatalf("operator with only the CA: %v", err)
	}
	if err := handshake(t, srv, Files{CA: srv.CA, Cert: f(other, "n2").Cert, Key: f(other, "n2").Key}, "n1"); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	if err := handshake(t, srv, Files{CA: f(other, "n2").CA}, "n1"); err == nil {
		t.Fatal("the client trusted a server from another CA")
	}
	if _, err := ServerConfig(Files{CA: srv.CA}); err == nil {
		t.Fatal("server without a certificate")
	}
	if _, err := ClientConfig(Files{Cert: srv.Cert}); err == nil {
		t.Fatal("client certificate without its key")
	}
}
