package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/hivemind/hivemind/pkg/config"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
)

// healthcheck asks this node's own health service whether it is SERVING.
// It reads the same flags and HIVEMIND_* variables as the server, so in a
// container (which has no shell) `hivemind-x healthcheck` just works.
func healthcheck(ctx context.Context, r Role, args []string, stderr io.Writer) int {
	var c Common
	fs := newFlagSet(r, r.Command+" healthcheck", &c, stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := config.Parse(fs, args, nil); err != nil {
		if err == config.ErrHelp {
			return 0
		}
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 2
	}
	target := dialable(c.GRPCAddr)
	// Health needs no token, but a TLS server needs a TLS client: the same
	// --tls-* files serve.
	creds, err := tlsconfig.Client(c.TLS)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 2
	}
	conn, err := grpcclient.Dial(target, grpcclient.Config{MaxRetries: -1, TLS: creds})
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck %s: %v\n", target, err)
		return 1
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		fmt.Fprintf(stderr, "healthcheck %s: %s\n", target, resp.GetStatus())
		return 1
	}
	return 0
}

// dialable turns a listen address such as ":7000" or "0.0.0.0:7000" into
// one a client can dial on this machine.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
