// Package daemon is the process skeleton shared by every hivemind binary:
// flags and HIVEMIND_* variables, logging, the gRPC server with health,
// reflection and Node/Info, the Prometheus /metrics port, the healthcheck
// subcommand, and a clean stop on SIGTERM.
//
// A role supplies a Role: its own flags and a Start function that builds
// its parts on the shared Env. Start marks the server SERVING when the role
// is really ready; until then health checks fail.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hivemind/hivemind/pkg/config"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/pkg/logging"
	"github.com/hivemind/hivemind/pkg/nodeinfo"
)

// Role describes one hivemind binary.
type Role struct {
	// Name is the role as reported by Node/Info: controlplane, host, dns, notifier.
	Name string
	// Command is the binary name, used in --help.
	Command string
	// Synopsis is the first paragraph of --help.
	Synopsis string
	// DefaultGRPCAddr and DefaultMetricsAddr are the listen defaults.
	DefaultGRPCAddr    string
	DefaultMetricsAddr string
	// MaxRecvMsgSize bounds an incoming gRPC message; 0 means the server default.
	MaxRecvMsgSize int
	// Flags registers the role's own flags. May be nil.
	Flags func(fs *flag.FlagSet)
	// Start builds and starts the role on env. The returned stop function
	// is called once on shutdown, before the gRPC server stops, so the role
	// can hand over leadership, leave gossip and end its streams.
	Start func(ctx context.Context, env *Env) (stop func(context.Context) error, err error)
}

// Common holds the flags every role has.
type Common struct {
	NodeName        string
	GRPCAddr        string
	AdvertiseAddr   string
	MetricsAddr     string
	DataDir         string
	LogFormat       string
	LogLevel        string
	ShutdownTimeout time.Duration
}

func (c *Common) register(fs *flag.FlagSet, r Role) {
	host, _ := os.Hostname()
	fs.StringVar(&c.NodeName, "node-name", host, "name of this node, unique in the cluster")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", r.DefaultGRPCAddr, "address the gRPC API listens on")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", "", "gRPC address other nodes use to reach this one (default: --grpc-addr)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", r.DefaultMetricsAddr, "address of the Prometheus /metrics HTTP endpoint; empty disables it")
	fs.StringVar(&c.DataDir, "data-dir", "data/"+r.Name, "directory for this node's durable state")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: json or text")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop may take before calls are cut off")
}

// Env is what a role's Start gets to build on.
type Env struct {
	Common   Common
	Logger   *slog.Logger
	Server   *grpcserver.Server
	Registry *prometheus.Registry
	// MetricsAddr is the address /metrics actually listens on ("" if disabled).
	MetricsAddr string
}

// Main runs the role with the process's arguments and exits with its status.
func Main(r Role) {
	os.Exit(Run(context.Background(), r, os.Args[1:], os.Stderr))
}

// Run runs the role until ctx ends or SIGINT/SIGTERM arrives, then stops it
// cleanly. It returns the process exit status. Logs and help go to stderr.
func Run(ctx context.Context, r Role, args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, r, args[1:], stderr)
	}
	var c Common
	fs := newFlagSet(r, r.Command, &c, stderr)
	if err := config.Parse(fs, args, nil); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", r.Command, err)
		return 2
	}
	logger, err := logging.New(stderr, c.LogFormat, c.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", r.Command, err)
		return 2
	}
	logger = logger.With("role", r.Name, "node", c.NodeName)
	if err := serve(ctx, r, c, logger); err != nil {
		logger.Error("stopped with error", "err", err)
		return 1
	}
	return 0
}

func newFlagSet(r Role, command string, c *Common, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(out)
	c.register(fs, r)
	if r.Flags != nil {
		r.Flags(fs)
	}
	config.SetUsage(fs, command, r.Synopsis+"\n\nSubcommands:\n  healthcheck   exit 0 when this node's gRPC health service reports SERVING")
	return fs
}

func serve(ctx context.Context, r Role, c Common, logger *slog.Logger) error {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := grpcserver.New(grpcserver.Config{Addr: c.GRPCAddr, Logger: logger, Registerer: reg, MaxRecvMsgSize: r.MaxRecvMsgSize})
	if err != nil {
		return err
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = srv.Addr()
	}
	env := &Env{Common: c, Logger: logger, Server: srv, Registry: reg}

	var metricsSrv *http.Server
	if c.MetricsAddr != "" {
		lis, err := net.Listen("tcp", c.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listen on %s: %w", c.MetricsAddr, err)
		}
		env.MetricsAddr = lis.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// Profiles on the metrics port, which operators keep private anyway.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metricsSrv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("metrics server", "err", err)
			}
		}()
	}

	hivemindv1.RegisterNodeServer(srv.GRPC(), &nodeinfo.Service{
		Role: r.Name, NodeName: c.NodeName, GRPCAddress: c.AdvertiseAddr, Started: time.Now(),
	})

	roleCtx, cancelRole := context.WithCancel(ctx)
	defer cancelRole()
	stopRole, err := r.Start(roleCtx, env)
	if err != nil {
		srv.Stop(context.Background())
		return fmt.Errorf("start %s: %w", r.Name, err)
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	logger.Info("started", "grpc", srv.Addr(), "metrics", env.MetricsAddr)

	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("stopping")
	case serveErr = <-served:
		logger.Error("grpc server ended", "err", serveErr)
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	srv.SetServing(false)
	var errs []error
	if stopRole != nil {
		if err := stopRole(shutdownCtx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", r.Name, err))
		}
	}
	cancelRole()
	srv.Stop(shutdownCtx)
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(shutdownCtx)
	}
	logger.Info("stopped")
	return errors.Join(append(errs, serveErr)...)
}
