// Command hivemind-host runs the hivemind host role: the agent on every
// machine that publishes the host, its addresses and its services with
// their health, and announces instances for programs that are not agents.
package main

import (
	"context"
	"errors"
	"flag"

	"github.com/hivemind/hivemind/pkg/daemon"
	"github.com/hivemind/hivemind/pkg/hostpublish"
	"github.com/hivemind/hivemind/services/host/internal/agent"
	"github.com/hivemind/hivemind/services/host/internal/announce"
	"github.com/hivemind/hivemind/services/host/internal/hostapi"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
)

func main() {
	var flags *hostconfig.Flags
	daemon.Main(daemon.Role{
		Name:               "host",
		Command:            "hivemind-host",
		Synopsis:           "Host agent: registers this machine, its addresses and services (with health checks) in the cluster, pushes them to dns processors, and announces instances of programs that are not agents. SIGHUP reloads --config.",
		DefaultGRPCAddr:    "127.0.0.1:7100",
		DefaultMetricsAddr: "127.0.0.1:9101",
		DefaultGossipAddr:  "127.0.0.1:7947",
		DefaultRequires:    nil,
		Flags:              func(fs *flag.FlagSet) { flags = hostconfig.RegisterFlags(fs) },
		Start: func(ctx context.Context, env *daemon.Env) (func(context.Context) error, error) {
			node, err := env.NewClusterNode("host", daemon.ClusterOptions{
				OnReady: func(ready bool, _ string) { env.Server.SetServing(ready) },
			})
			if err != nil {
				return nil, err
			}
			cp := agent.ControlPlane(node)
			push := &agent.PushDialer{Dial: env.Client}
			a, err := agent.New(agent.Options{
				Node: env.Common.NodeName, Loader: flags.Loader(), DataDir: env.Common.DataDir, Logger: env.Logger,
				CheckOutputInterval: flags.CheckOutputInterval,
				Publish:             hostpublish.Options{Store: agent.PublishStore(cp), Targets: agent.DNSTargets(node), Open: push.Open},
				// The config's exec probes become Node/Probe's exec probes.
				Probes: env.Ping.SetExec,
			})
			if err != nil {
				return nil, errors.Join(err, node.Stop(ctx))
			}
			reg := announce.New(env.Common.NodeName, func() announce.Store {
				if c := cp(); c != nil {
					return c
				}
				return nil
			}, nil, env.Logger)
			hostapi.Register(env.Server.GRPC(), env.Auth.Policy(), &hostapi.Server{Agent: a, Registry: reg})

			node.Start(ctx)
			if err := a.Start(ctx); err != nil {
				return nil, errors.Join(err, a.Stop(ctx), node.Stop(ctx))
			}
			a.ReloadOnSIGHUP(ctx)
			go reg.Run(ctx)
			return func(ctx context.Context) error {
				// Gone first, while the node is still a member and the
				// control plane still takes its writes; then leave.
				err := a.Stop(ctx)
				push.Close()
				return errors.Join(err, node.Stop(ctx))
			}, nil
		},
	})
}
