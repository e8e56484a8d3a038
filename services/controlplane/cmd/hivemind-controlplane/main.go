// Command hivemind-controlplane runs the hivemind control-plane role.
package main

import (
	"context"

	"github.com/hivemind/hivemind/pkg/daemon"
)

func main() {
	daemon.Main(daemon.Role{
		Name:               "controlplane",
		Command:            "hivemind-controlplane",
		Synopsis:           "Control plane: the raft-replicated event log, resource tree, intents and membership.",
		DefaultGRPCAddr:    "127.0.0.1:7000",
		DefaultMetricsAddr: "127.0.0.1:9100",
		// The role's own work arrives with its issue; until then it serves
		// Node/Info and health, and claims nothing more.
		Start: func(_ context.Context, env *daemon.Env) (func(context.Context) error, error) {
			env.Server.SetServing(true)
			return nil, nil
		},
	})
}
