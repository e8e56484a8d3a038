// Command hivectl is the operator's command line for a hivemind cluster:
// the resource tree, the event log, membership, the service catalog, DNS,
// subscriptions and ping requests, over the same gRPC API the roles use.
package main

import (
	"os"

	"github.com/hivemind/hivemind/cmd/hivectl/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
