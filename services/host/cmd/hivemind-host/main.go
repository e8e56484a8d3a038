// Command hivemind-host runs the hivemind host role.
package main

import (
	"context"

	"github.com/hivemind/hivemind/pkg/daemon"
)

func main() {
	daemon.Main(daemon.Role{
		Name:               "host",
		Command:            "hivemind-host",
		Synopsis:           "Host agent: registers this machine, its addresses and services in the cluster.",
		DefaultGRPCAddr:    "127.0.0.1:7100",
		DefaultMetricsAddr: "127.0.0.1:9101",
		// The role's own work arrives with its issue; until then it serves
		// Node/Info and health, and claims nothing more.
		Start: func(_ context.Context, env *daemon.Env) (func(context.Context) error, error) {
			env.Server.SetServing(true)
			return nil, nil
		},
	})
}
