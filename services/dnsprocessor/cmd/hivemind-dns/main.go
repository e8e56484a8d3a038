// Command hivemind-dns runs the hivemind dns role.
package main

import (
	"context"

	"github.com/hivemind/hivemind/pkg/daemon"
)

func main() {
	daemon.Main(daemon.Role{
		Name:               "dns",
		Command:            "hivemind-dns",
		Synopsis:           "DNS processor: serves authoritative DNS for the cluster's hosts and services.",
		DefaultGRPCAddr:    "127.0.0.1:7200",
		DefaultMetricsAddr: "127.0.0.1:9102",
		// The role's own work arrives with its issue; until then it serves
		// Node/Info and health, and claims nothing more.
		Start: func(_ context.Context, env *daemon.Env) (func(context.Context) error, error) {
			env.Server.SetServing(true)
			return nil, nil
		},
	})
}
