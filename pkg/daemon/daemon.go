// Package daemon is the process skeleton shared by every hivemind binary:
// flags and HIVEMIND_* variables, logging, the gRPC server with health,
// reflection, Node/Info and Auth, authentication of every call (cluster
// secret for nodes, API tokens for operators) and TLS, the Prometheus
// /metrics port, the healthcheck subcommand, and a clean stop on SIGTERM.
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/config"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/pkg/logging"
	"github.com/hivemind/hivemind/pkg/nodecert"
	"github.com/hivemind/hivemind/pkg/nodeinfo"
	"github.com/hivemind/hivemind/pkg/ping"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
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
	// DefaultGossipAddr is where gossip listens by default (UDP and TCP).
	DefaultGossipAddr string
	// DefaultRequires are the roles this role needs to be ready.
	DefaultRequires []string
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
	// Security: the cluster secret, operator API tokens and TLS files.
	ClusterSecret     string
	ClusterSecretFile string
	APITokens         string
	APITokensFile     string
	TLS               tlsconfig.Files
	// TLSCAKey is the CA's private key: a control-plane member given it
	// issues node certificates (see certs.go). TLSCertValidity is how long
	// they are valid.
	TLSCAKey        string
	TLSCertValidity time.Duration
	// Membership: gossip, seeds and required roles (see cluster.go).
	Cluster ClusterFlags
	// Limits on what one caller can make this node do (see limits.go).
	Limits LimitFlags
	// Audit is the audit trail (see audit.go).
	Audit AuditFlags
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
	fs.StringVar(&c.ClusterSecret, "cluster-secret", "", "the cluster secret (at least 16 bytes) every node shares; prefer --cluster-secret-file")
	fs.StringVar(&c.ClusterSecretFile, "cluster-secret-file", "", "file holding the cluster secret")
	fs.StringVar(&c.APITokens, "api-tokens", "", "operator API tokens as name=token:scope,…;… with scopes read, write, admin (implies read, write), filter")
	fs.StringVar(&c.APITokensFile, "api-tokens-file", "", "file of operator API tokens, one name=token:scopes per line (added to --api-tokens)")
	fs.StringVar(&c.TLS.Cert, "tls-cert", "", "PEM certificate this node presents as server and client; with --tls-key, serves TLS")
	fs.StringVar(&c.TLS.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLS.CA, "tls-ca", "", "PEM CA that signs the other nodes' certificates; servers then verify client certificates when presented. Without --tls-cert, the node serves TLS with a certificate the control plane issues it after its join (kept in <data-dir>/node.crt)")
	if r.Name == auth.RoleControlPlane {
		fs.StringVar(&c.TLSCAKey, "tls-ca-key", "", "PEM private key of --tls-ca: this member then issues node certificates (for each node's own registered key, naming the node) and its own")
		fs.DurationVar(&c.TLSCertValidity, "tls-cert-validity", nodecert.DefaultValidity, "how long a node certificate this member issues is valid; nodes renew at two thirds of it")
	}
	c.Cluster.register(fs, r)
	c.Limits.register(fs)
	c.Audit.register(fs)
}

// Env is what a role's Start gets to build on.
type Env struct {
	Common   Common
	Logger   *slog.Logger
	Server   *grpcserver.Server
	Registry *prometheus.Registry
	// MetricsAddr is the address /metrics actually listens on ("" if disabled).
	MetricsAddr string
	// Secret is the cluster secret, for keys derived from it (gossip,
	// tickets).
	Secret secret.Secret
	// Auth guards every call to Server. A role gives its own methods rules
	// with Auth.Policy().Set before serving them; a method without a rule
	// is denied.
	Auth *auth.Authenticator
	// Members is the registry authentication checks node keys against.
	// NewClusterNode plugs in the node's cache of the control plane's
	// registry; the control plane plugs in its own replica.
	Members *auth.Directory
	// NodeKey is this node's identity key (data-dir/node.key).
	NodeKey auth.NodeKey
	// NodeCert is the certificate the control plane issued this node,
	// which it serves and calls with; nil unless TLS is on without
	// --tls-cert (see certs.go).
	NodeCert *nodecert.Source
	// Client dials other nodes as this node: TLS when configured, and node
	// authentication with the cluster secret.
	Client grpcclient.Config
	certs  *certRenewal
	// Ping serves the measuring methods of the Node service (Ping,
	// PingRequest, Probe, ProbeRequest, EstimateRTT). NewClusterNode
	// attaches it to the node's membership; a role with exec probes gives
	// them with Ping.SetExec.
	Ping *ping.Service
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
	if err := c.Limits.validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", r.Command, err)
		return 2
	}
	sec, err := loadSecurity(r, c)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", r.Command, err)
		return 2
	}
	if err := serve(ctx, r, c, sec, logger); err != nil {
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

// security is what the security flags load to.
type security struct {
	secret    secret.Secret
	operators *auth.APITokens
	nodeKey   auth.NodeKey
	serverTLS credentials.TransportCredentials
	clientTLS credentials.TransportCredentials
	// nodeCert holds the issued certificate, when the node uses one;
	// issuer signs certificates, on a member given the CA key.
	nodeCert *nodecert.Source
	issuer   *nodecert.Issuer
}

func loadSecurity(r Role, c Common) (security, error) {
	var s security
	var err error
	if err := auth.ValidateNodeName(c.NodeName); err != nil {
		return s, fmt.Errorf("--node-name: %w", err)
	}
	if s.secret, err = secret.Load(c.ClusterSecret, c.ClusterSecretFile); err != nil {
		return s, err
	}
	if s.operators, err = auth.LoadAPITokens(c.APITokens, c.APITokensFile); err != nil {
		return s, err
	}
	if s.nodeKey, err = auth.LoadOrCreateNodeKey(c.DataDir); err != nil {
		return s, err
	}
	if err := loadTLS(r, c, &s); err != nil {
		return s, err
	}
	return s, nil
}

func serve(ctx context.Context, r Role, c Common, sec security, logger *slog.Logger) error {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	nodeKey := sec.nodeKey
	members := auth.NewDirectory()
	tokens := auth.NewTokens(nil)
	authn := auth.NewAuthenticator(auth.NewPolicy(), tokens, sec.operators, members)
	audited, err := auditConfig(c.Audit, c.NodeName, authn, logger)
	if err != nil {
		return err
	}
	defer audited.Log.Close()
	srv, err := grpcserver.New(grpcserver.Config{
		Addr: c.GRPCAddr, Logger: logger, Registerer: reg,
		Auth: authn, TLS: sec.serverTLS,
		MaxRequestBytes:  c.Limits.MaxRequestBytes,
		InternalServices: []string{"/hivemind.raft.v1.Raft/"},
		RateLimit:        c.Limits.rateLimit(),
		Audit:            audited,
	})
	if err != nil {
		return err
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = srv.Addr()
	}
	env := &Env{
		Common: c, Logger: logger, Server: srv, Registry: reg,
		Secret:   sec.secret,
		Auth:     authn,
		Members:  members,
		NodeKey:  nodeKey,
		NodeCert: sec.nodeCert,
		Client:   grpcclient.Config{TLS: sec.clientTLS, Auth: auth.NewNodeAuth(c.NodeName, sec.secret, nodeKey)},
	}
	hivemindv1.RegisterAuthServer(srv.GRPC(), auth.NewServer(auth.ServerConfig{
		Name: c.NodeName, Secret: sec.secret, Tokens: tokens, Members: members,
		// Every node presents a certificate when the servers verify them:
		// its own file, or the one issued to it (a control-plane member
		// without a file holds the CA key and issues its own).
		PeerCertificates: c.TLS.CA != "" && sec.serverTLS != nil,
	}))
	if err := env.setUpCertificates(ctx, sec); err != nil {
		srv.Stop(context.Background())
		return err
	}

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

	env.Ping, err = ping.New(ping.Config{
		Name: c.NodeName, Role: r.Name, DataDir: c.DataDir, Dial: env.Client, Logger: logger,
	})
	if err != nil {
		srv.Stop(context.Background())
		return err
	}
	defer env.Ping.Close() // when Start fails
	hivemindv1.RegisterNodeServer(srv.GRPC(), nodeServer{
		Service: &nodeinfo.Service{Role: r.Name, NodeName: c.NodeName, GRPCAddress: c.AdvertiseAddr, Started: time.Now()},
		ping:    env.Ping,
	})

	roleCtx, cancelRole := context.WithCancel(ctx)
	defer cancelRole()
	stopRole, err := r.Start(roleCtx, env)
	if err != nil {
		srv.Stop(context.Background())
		return fmt.Errorf("start %s: %w", r.Name, err)
	}

	if env.certs != nil {
		go env.certs.run(roleCtx)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	logger.Info("started", "grpc", srv.Addr(), "metrics", env.MetricsAddr, "tls", sec.serverTLS != nil, "api_tokens", sec.operators.Len())

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
	// Watches and other client streams end now, with UNAVAILABLE, so their
	// clients resume on another member while this one stops; raft streams
	// stay up for the leadership transfer.
	srv.Drain()
	var errs []error
	// Link records stop before the node leaves, so the leave does not look
	// like every link going down.
	if err := env.Ping.Close(); err != nil {
		logger.Debug("closing ping", "err", err)
	}
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

// nodeServer is the Node service of every role: Info from nodeinfo, the
// measuring methods from ping.
type nodeServer struct {
	*nodeinfo.Service
	ping *ping.Service
}

func (n nodeServer) Ping(ctx context.Context, req *hivemindv1.NodePingRequest) (*hivemindv1.NodePingResponse, error) {
	return n.ping.Ping(ctx, req)
}

func (n nodeServer) PingRequest(req *hivemindv1.PingRequestRequest, st grpc.ServerStreamingServer[hivemindv1.PingRequestResponse]) error {
	return n.ping.PingRequest(req, st)
}

func (n nodeServer) Probe(ctx context.Context, req *hivemindv1.NodeProbeRequest) (*hivemindv1.NodeProbeResponse, error) {
	return n.ping.Probe(ctx, req)
}

func (n nodeServer) ProbeRequest(req *hivemindv1.ProbeRequestRequest, st grpc.ServerStreamingServer[hivemindv1.ProbeRequestResponse]) error {
	return n.ping.ProbeRequest(req, st)
}

func (n nodeServer) EstimateRTT(ctx context.Context, req *hivemindv1.EstimateRTTRequest) (*hivemindv1.EstimateRTTResponse, error) {
	return n.ping.EstimateRTT(ctx, req)
}
