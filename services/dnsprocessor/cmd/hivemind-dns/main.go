// Command hivemind-dns runs the hivemind dns role: an authoritative DNS
// server for the cluster's hosts and services (see docs/dns.md).
package main

import (
	"context"

	"github.com/hivemind/hivemind/pkg/daemon"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/dnsnode"
)

func main() {
	var flags dnsnode.Flags
	daemon.Main(daemon.Role{
		Name:               "dns",
		Command:            "hivemind-dns",
		Synopsis:           "DNS processor: serves authoritative DNS for the cluster's hosts and services, fed by the control plane and by the hosts themselves.",
		DefaultGRPCAddr:    "127.0.0.1:7200",
		DefaultMetricsAddr: "127.0.0.1:9102",
		DefaultGossipAddr:  "127.0.0.1:7948",
		DefaultRequires:    []string{"controlplane"},
		Flags:              flags.Register,
		Start: func(ctx context.Context, env *daemon.Env) (func(context.Context) error, error) {
			return dnsnode.Start(ctx, env, &flags)
		},
	})
}
