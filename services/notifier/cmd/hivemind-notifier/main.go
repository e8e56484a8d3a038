// Command hivemind-notifier runs the hivemind notifier role.
package main

import (
	"context"

	"github.com/hivemind/hivemind/pkg/daemon"
)

func main() {
	daemon.Main(daemon.Role{
		Name:               "notifier",
		Command:            "hivemind-notifier",
		Synopsis:           "Notifier: delivers webhooks and mail for cluster events, once across replicas.",
		DefaultGRPCAddr:    "127.0.0.1:7300",
		DefaultMetricsAddr: "127.0.0.1:9103",
		// The role's own work arrives with its issue; until then it serves
		// Node/Info and health, and claims nothing more.
		Start: func(_ context.Context, env *daemon.Env) (func(context.Context) error, error) {
			env.Server.SetServing(true)
			return nil, nil
		},
	})
}
