// Package tlsconfig turns certificate, key and CA files into gRPC transport
// credentials for hivemind servers and clients.
//
// A server always presents its certificate. Given a CA, it also asks every
// client for a certificate and verifies the ones it gets against that CA
// (mTLS between roles, which present theirs), but still accepts clients
// without one, such as an operator running grpcurl with only -cacert: those
// are authenticated by their bearer token instead.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/credentials"
)

// Files names the PEM files. All empty means plaintext.
type Files struct {
	// Cert and Key are this node's certificate (chain) and private key.
	Cert, Key string
	// CA holds the certificates that sign peers' certificates.
	CA string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// ServerConfig returns the server side: Cert and Key are required; with CA,
// client certificates are requested and verified when given.
func ServerConfig(f Files) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS server needs both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pool, err := loadPool(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// ClientConfig returns the client side: servers are verified against CA
// (the system roots when CA is empty); Cert and Key, when set, are
// presented to servers that ask.
func ClientConfig(f Files) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pool, err := loadPool(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.Cert != "" && f.Key != "":
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case f.Cert != "" || f.Key != "":
		return nil, errors.New("TLS client certificate needs both --tls-cert and --tls-key")
	}
	return cfg, nil
}

// Server returns server credentials, or nil for plaintext when no file is
// set.
func Server(f Files) (credentials.TransportCredentials, error) {
	if !f.Enabled() {
		return nil, nil
	}
	cfg, err := ServerConfig(f)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// Client returns client credentials, or nil for plaintext when no file is
// set.
func Client(f Files) (credentials.TransportCredentials, error) {
	if !f.Enabled() {
		return nil, nil
	}
	cfg, err := ClientConfig(f)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// Certificates gives the certificate a node presents, which may change at
// run time (a certificate the control plane issued and renews; package
// nodecert). It is asked on every new connection.
type Certificates interface {
	// ServerCertificate is presented to clients; an error fails the
	// handshake.
	ServerCertificate() (*tls.Certificate, error)
	// ClientCertificate is presented to servers that ask; an empty
	// certificate sends none.
	ClientCertificate() (*tls.Certificate, error)
}

// ServerConfigFrom is ServerConfig with the certificate taken from certs
// on each handshake instead of from files. caFile is required: it verifies
// client certificates.
func ServerConfigFrom(certs Certificates, caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, errors.New("TLS with issued certificates needs --tls-ca")
	}
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certs.ServerCertificate()
		},
		ClientCAs:  pool,
		ClientAuth: tls.VerifyClientCertIfGiven,
	}, nil
}

// ClientConfigFrom is ClientConfig with the client certificate taken from
// certs on each handshake; servers are verified against caFile.
func ClientConfigFrom(certs Certificates, caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, errors.New("TLS with issued certificates needs --tls-ca")
	}
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return certs.ClientCertificate()
		},
	}, nil
}

// LoadPool reads the PEM certificates of path into a pool.
func LoadPool(path string) (*x509.CertPool, error) { return loadPool(path) }

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("TLS CA %s holds no PEM certificate", path)
	}
	return pool, nil
}
