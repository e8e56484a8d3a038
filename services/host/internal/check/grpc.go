package check

import (
	"context"
	"crypto/tls"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// grpcChecker asks grpc.health.v1.Health/Check: SERVING passes, anything
// else (NOT_SERVING, UNKNOWN, an unknown service, an error) is critical.
type grpcChecker struct {
	target, service string
	creds           credentials.TransportCredentials
}

func newGRPCChecker(d Definition) grpcChecker {
	creds := insecure.NewCredentials()
	if d.GRPCUseTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: d.TLSSkipVerify})
	}
	return grpcChecker{target: d.GRPC, service: d.GRPCService, creds: creds}
}

func (c grpcChecker) Check(ctx context.Context) Result {
	what := "gRPC health " + c.target
	if c.service != "" {
		what += "/" + c.service
	}
	// A connection per run, like the HTTP check: reusing one would report a
	// server that stopped accepting connections as healthy.
	conn, err := grpc.NewClient("passthrough:///"+c.target, grpc.WithTransportCredentials(c.creds))
	if err != nil {
		return Result{Critical, fmt.Sprintf("%s: %v", what, err)}
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: c.service})
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded {
			return timeoutResult(what, ctx)
		}
		return Result{Critical, fmt.Sprintf("%s: %v", what, err)}
	}
	st := Critical
	if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
		st = Passing
	}
	return Result{st, fmt.Sprintf("%s: %s", what, resp.GetStatus())}
}
