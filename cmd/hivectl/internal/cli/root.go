// Package cli is hivectl's commands: one cobra command per operation, each
// a thin layer over the shared pkg/ clients that turns flags into a request
// and the answer into a table, JSON or YAML.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hivemind/hivemind/pkg/buildinfo"
	"github.com/hivemind/hivemind/pkg/config"
)

// Exit codes scripts can rely on.
const (
	ExitOK       = 0
	ExitError    = 1
	ExitUsage    = 2
	ExitNotFound = 3
)

// DefaultEndpoints are the control-plane members of the `make run` cluster.
const DefaultEndpoints = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

// DefaultTokenFile is where `make run` keeps its operator token; hivectl
// reads it when no token is given and the file exists.
const DefaultTokenFile = ".run/operator-token"

// globals are the connection and output flags every command shares.
type globals struct {
	endpoints []string
	token     string
	tokenFile string
	cacert    string
	cert      string
	key       string
	timeout   time.Duration
	output    string
	node      string

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	cl *clients
	// tw is the table writer of a streamed answer; live says to flush it
	// after every item.
	tw   *tabwriter.Writer
	live bool
}

// Main runs hivectl with args and returns its exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, stdin, stdout, stderr, os.LookupEnv)
}

// Run is Main with the context and environment given, for tests.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(g, lookupEnv)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if g.cl != nil {
		g.cl.close()
	}
	if err == nil {
		return ExitOK
	}
	var re *runError
	if errors.As(err, &re) {
		fmt.Fprintf(stderr, "hivectl: %s\n", re.msg)
		return re.code
	}
	// Anything that did not come out of a command's own run is a usage
	// error: an unknown command or flag, a wrong number of arguments.
	fmt.Fprintf(stderr, "hivectl: %v (see '%s --help')\n", err, cmd.CommandPath())
	return ExitUsage
}

func newRoot(g *globals, lookupEnv func(string) (string, bool)) *cobra.Command {
	root := &cobra.Command{
		Use:   "hivectl",
		Short: "Operate a hivemind cluster",
		Long: `hivectl talks to a hivemind cluster over its gRPC API: the resource tree,
the event log, membership, the service catalog, DNS, subscriptions and ping
requests.

Every connection flag can also be set through HIVEMIND_<FLAG>
(--endpoints ↔ HIVEMIND_ENDPOINTS, --token ↔ HIVEMIND_TOKEN, …); a flag on
the command line wins. Without a token, hivectl reads ` + DefaultTokenFile + `
when it exists (the token ` + "`make run`" + ` makes).

Exit codes: 0 ok, 1 error, 2 usage, 3 not found.`,
		Example: `  hivectl status
  hivectl put /app/web/config 'port=8080'
  hivectl get --prefix /app/ -o json`,
		Version:       buildinfo.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return fromEnv(cmd.Root().PersistentFlags(), lookupEnv)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	f := root.PersistentFlags()
	f.StringSliceVar(&g.endpoints, "endpoints", strings.Split(DefaultEndpoints, ","), "members to talk to, any role, comma-separated host:port")
	f.StringVar(&g.token, "token", "", "operator API token (hmo_…)")
	f.StringVar(&g.tokenFile, "token-file", "", "file holding the operator token")
	f.StringVar(&g.cacert, "cacert", "", "CA certificate (PEM) that signs the servers' certificates; turns TLS on")
	f.StringVar(&g.cert, "cert", "", "client certificate (PEM), with --key; turns TLS on")
	f.StringVar(&g.key, "key", "", "client private key (PEM), with --cert")
	f.DurationVar(&g.timeout, "timeout", 10*time.Second, "bound on a call (streams: on the whole command when set)")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&g.node, "node", "", "send role calls (host, dns, notifier, ping) to this member instead of the first alive one")

	root.AddCommand(
		getCmd(g), putCmd(g), delCmd(g), watchCmd(g), txnCmd(g), compactCmd(g),
		statusCmd(g), membersCmd(g),
		eventsCmd(g), intentsCmd(g),
		hostsCmd(g), servicesCmd(g), discoverCmd(g), announceCmd(g), withdrawCmd(g), dnsCmd(g),
		subsCmd(g), deliveriesCmd(g),
		pingCmd(g), probeCmd(g),
	)
	return root
}

// fromEnv sets every flag not given on the command line from its
// HIVEMIND_* variable.
func fromEnv(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		env := config.EnvName(f.Name)
		v, ok := lookupEnv(env)
		if !ok {
			return
		}
		// Set (not Value.Set) marks the flag as given, as on the command line.
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
		}
	})
	if len(errs) > 0 {
		return &runError{code: ExitUsage, msg: errors.Join(errs...).Error()}
	}
	return nil
}

// ctx is the context of one command: bounded by --timeout for unary
// calls; streams pass stream=true and are bounded only when --timeout was
// set explicitly.
func (g *globals) ctx(cmd *cobra.Command, stream bool) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if stream && !cmd.Flags().Changed("timeout") {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, g.timeout)
}

// run wraps a command's body so that its errors are classified (exit code,
// one clear line) rather than treated as usage errors.
func (g *globals) run(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(g.output); err != nil {
			return err
		}
		err := fn(cmd, args)
		if g.tw != nil {
			_ = g.tw.Flush()
		}
		if err != nil {
			return g.classify(err)
		}
		return nil
	}
}

// exactArgs, rangeArgs: argument checks whose errors name what is missing.
func exactArgs(names ...string) cobra.PositionalArgs {
	return rangeArgs(len(names), names...)
}

func rangeArgs(min int, names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < min {
			return fmt.Errorf("missing argument %s", strings.Join(names[len(args):min], " "))
		}
		if len(args) > len(names) {
			return fmt.Errorf("too many arguments: want %s, got %d", strings.Join(names, " "), len(args))
		}
		return nil
	}
}
