// Command hivemind-certs writes a development CA and a certificate per
// node for a local or docker-compose hivemind cluster (see package devca).
//
//	hivemind-certs -dir certs controlplane-1 controlplane-2 host-1
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/hivemind/hivemind/pkg/devca"
)

func main() {
	dir := flag.String("dir", "certs", "directory to write ca.pem, ca-key.pem and <node>.pem, <node>-key.pem into; an existing CA there is reused")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: hivemind-certs [-dir certs] node-name…\n\nWrites a development CA (for tests and local clusters only) and a certificate\nfor each node, valid for its name, localhost and 127.0.0.1, as server and client.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := devca.WriteDir(*dir, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "hivemind-certs: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s/ca.pem and certificates for %d nodes\n", *dir, flag.NArg())
}
