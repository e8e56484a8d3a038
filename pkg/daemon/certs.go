package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cluster"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/nodecert"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
)

// loadTLS sets up the node's TLS from the flags. Three ways, the first that
// applies:
//   - --tls-cert and --tls-key: operator-supplied files, used as they are
//     (never replaced by an issued certificate);
//   - --tls-ca alone: the certificate the control plane issues this node
//     for its node key, kept in <data-dir>/node.crt and renewed;
//   - nothing: plaintext.
//
// On the control plane, --tls-ca-key makes the member an issuer. A member
// needs a certificate of its own to take part in raft before any join, so
// one with --tls-ca must have --tls-cert or --tls-ca-key (it then issues
// its own).
func loadTLS(r Role, c Common, s *security) error {
	var err error
	if c.TLSCAKey != "" {
		if c.TLS.CA == "" {
			return errors.New("--tls-ca-key needs --tls-ca, the CA certificate it belongs to")
		}
		if s.issuer, err = nodecert.LoadIssuer(c.TLS.CA, c.TLSCAKey, c.TLSCertValidity); err != nil {
			return err
		}
	}
	if c.TLS.Cert != "" || c.TLS.Key != "" || c.TLS.CA == "" {
		if s.serverTLS, err = tlsconfig.Server(c.TLS); err != nil {
			return err
		}
		s.clientTLS, err = tlsconfig.Client(c.TLS)
		return err
	}
	if r.Name == auth.RoleControlPlane && s.issuer == nil {
		return errors.New("--tls-ca without --tls-cert: a control-plane member needs --tls-cert and --tls-key, or --tls-ca-key to issue its own certificate (raft runs before any join)")
	}
	pool, err := tlsconfig.LoadPool(c.TLS.CA)
	if err != nil {
		return err
	}
	if s.nodeCert, err = nodecert.NewSource(c.DataDir, c.NodeName, s.nodeKey, pool, nil); err != nil {
		return err
	}
	srv, err := tlsconfig.ServerConfigFrom(s.nodeCert, c.TLS.CA)
	if err != nil {
		return err
	}
	cli, err := tlsconfig.ClientConfigFrom(s.nodeCert, c.TLS.CA)
	if err != nil {
		return err
	}
	s.serverTLS, s.clientTLS = credentials.NewTLS(srv), credentials.NewTLS(cli)
	return nil
}

// certRenewal keeps the node's issued certificate: from its own issuer on
// a member holding the CA key, else from the control plane once joined.
type certRenewal struct {
	renewer *nodecert.Renewer
	// node is the cluster node, set by NewClusterNode; nodeSet is closed
	// then.
	node    atomic.Pointer[cluster.Node]
	nodeSet chan struct{}
	once    sync.Once
}

// setUpCertificates serves Certificates on a member holding the CA key
// and, when the node uses an issued certificate, prepares its renewal. A
// member holding the key installs its own certificate before serving, so
// its peers can reach it at once.
func (env *Env) setUpCertificates(ctx context.Context, sec security) error {
	if sec.issuer != nil {
		hivemindv1.RegisterCertificatesServer(env.Server.GRPC(), &nodecert.Service{
			NodeName: env.Common.NodeName, Issuer: sec.issuer, Members: env.Members,
		})
	}
	if sec.nodeCert == nil {
		return nil
	}
	cr := &certRenewal{nodeSet: make(chan struct{})}
	obtain := cr.fromControlPlane
	if sec.issuer != nil {
		// The member signs its own key with the CA key it holds: nothing
		// another node could ask for, since the name is its own.
		obtain = func(context.Context) ([]byte, error) {
			pem, _, err := sec.issuer.Issue(env.Common.NodeName, env.NodeKey.Public())
			return pem, err
		}
		if sec.nodeCert.Leaf() == nil {
			pem, err := obtain(ctx)
			if err == nil {
				err = sec.nodeCert.Install(pem)
			}
			if err != nil {
				return fmt.Errorf("issue this member's own certificate: %w", err)
			}
		}
	}
	cr.renewer = &nodecert.Renewer{Source: sec.nodeCert, Obtain: obtain, Logger: env.Logger}
	env.certs = cr
	return nil
}

// fromControlPlane asks the control plane for a certificate, once the node
// has joined (its key is bound then).
func (cr *certRenewal) fromControlPlane(ctx context.Context) ([]byte, error) {
	select {
	case <-cr.nodeSet:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	n := cr.node.Load()
	select {
	case <-n.Joined():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cp := n.ControlPlane()
	if cp == nil {
		return nil, errors.New("no control-plane client yet")
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cp.IssueNodeCertificate(cctx)
	if err != nil {
		return nil, err
	}
	return resp.GetCertificatePem(), nil
}

func (cr *certRenewal) run(ctx context.Context) { cr.renewer.Run(ctx) }

// onJoin asks for a new certificate after every join but the first (the
// first one is what the renewal waits for anyway).
func (cr *certRenewal) onJoin(first bool) {
	if !first {
		cr.renewer.Poke()
	}
}

// setNode gives the renewal the node's membership, to reach the control
// plane through.
func (cr *certRenewal) setNode(n *cluster.Node) {
	cr.node.Store(n)
	cr.once.Do(func() { close(cr.nodeSet) })
}
