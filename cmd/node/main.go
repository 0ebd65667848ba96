// Command node runs zraft nodes serving the built-in key-value application.
//
//	node --dev                       a 3-node cluster in this process on 127.0.0.1
//	node --dev --tls                 the same with mutual TLS and throwaway certificates
//	node --config member.json        one member of a real cluster
//	node --join --id 4 --members 1=...,2=...,3=...,4=RAFT/CLIENT --cluster-id ID --data DIR   a member added with zraft member add
//	node --restore backup.tar --id 11 --members ... --cluster-id NEWID --data DIR   a new cluster from a backup
//	node --id 1 --members 1=10.0.0.1:7201/10.0.0.1:7101,2=...,3=... --data /var/lib/zraft \
//	     --cluster-id $(node --new-cluster-id, once per cluster) \
//	     --peer-tls-ca ca.pem --peer-tls-cert member1.pem --peer-tls-key member1-key.pem
//
// A Raft address that is not loopback needs peer TLS (--peer-tls-*) or an
// explicit --insecure-peer; a new member of a multi-member cluster needs the
// cluster's id (see docs/operations.md, Security).
//
// In --dev mode the client endpoints are 127.0.0.1:7101-7103 (change the
// first port with --dev-client-port), the Raft ports 7201-7203 and the HTTP
// endpoints (/metrics, /healthz, /status) 7301-7303. Data goes to --data
// (default ./zraft-data). With --tls, a throwaway CA, server and client
// certificates are generated afresh in DATA/tls at every start, the client
// port and HTTP serve mutual TLS, and the exact zraft command to reach them is
// printed. The process runs until SIGINT or SIGTERM, then shuts down
// gracefully. Every start prints the effective TLS mode of the client port
// and of HTTP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/internal/devtls"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type flags struct {
	dev            bool
	devTLS         bool
	devClientPort  int
	devRaftPort    int
	devHTTPPort    int
	configFile     string
	id             uint64
	members        string
	data           string
	httpAddr       string
	keepAlive      time.Duration
	sessionTimeout time.Duration
	tlsCert        string
	tlsKey         string
	tlsClientCA    string
	logLevel       string
	// Raft port (peer) security.
	clusterID    string
	newClusterID bool
	peerTLSCA    string
	peerTLSCert  string
	peerTLSKey   string
	insecurePeer bool
	pprof        bool
	// Admin and disaster recovery.
	adminTokenFile string
	restore        string
	join           bool
	clockSkew      time.Duration
}

func parse(args []string, stderr io.Writer) (flags, *flag.FlagSet, error) {
	var f flags
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage:\n  node --dev [--tls] [--data DIR]\n  node --config FILE\n  node --id N --members ID=RAFT/CLIENT,... --data DIR [flags]\n  node --join --id N --members CURRENT,...,N=RAFT/CLIENT --cluster-id ID --data DIR [flags]\n  node --restore FILE --id N --members ID=RAFT/CLIENT,... --cluster-id NEWID --data DIR [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.BoolVar(&f.dev, "dev", false, "run a 3-node cluster in this process on 127.0.0.1")
	fs.BoolVar(&f.devTLS, "tls", false, "with --dev: generate a throwaway CA and certificates in DATA/tls and serve mutual TLS")
	fs.IntVar(&f.devClientPort, "dev-client-port", 7101, "with --dev: first client port (members use it, +1, +2)")
	fs.IntVar(&f.devRaftPort, "dev-raft-port", 7201, "with --dev: first Raft port")
	fs.IntVar(&f.devHTTPPort, "dev-http-port", 7301, "with --dev: first HTTP port (0 disables HTTP)")
	fs.StringVar(&f.configFile, "config", "", "JSON config file (see docs/operations.md); flags override it")
	fs.Uint64Var(&f.id, "id", 0, "this member's id")
	fs.StringVar(&f.members, "members", "", "initial members: ID=RAFTADDR/CLIENTADDR,... (all members, this one included)")
	fs.StringVar(&f.data, "data", "", "data directory (default ./zraft-data with --dev)")
	fs.StringVar(&f.httpAddr, "http", "", "address for /metrics, /healthz and /status (empty: off)")
	fs.DurationVar(&f.keepAlive, "keepalive", 0, "keep-alive interval clients are told to use (default 1s)")
	fs.DurationVar(&f.sessionTimeout, "session-timeout", 0, "session timeout (default 10s)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file (PEM) for the client port and HTTP; needs --tls-key")
	fs.StringVar(&f.tlsKey, "tls-key", "", "key file (PEM) of --tls-cert")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "CA file (PEM): require client certificates it signed (mutual TLS); needs --tls-cert")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.clusterID, "cluster-id", "", "cluster id (16 hex digits), the same on every member of a new cluster; stored in the data dir")
	fs.BoolVar(&f.newClusterID, "new-cluster-id", false, "print a new random cluster id and exit")
	fs.StringVar(&f.peerTLSCA, "peer-tls-ca", "", "CA file: members must present certificates it signed (mutual TLS on the Raft port)")
	fs.StringVar(&f.peerTLSCert, "peer-tls-cert", "", "this member's certificate for the Raft port (server and client use)")
	fs.StringVar(&f.peerTLSKey, "peer-tls-key", "", "this member's key for the Raft port")
	fs.BoolVar(&f.insecurePeer, "insecure-peer", false, "allow a Raft address that is not loopback without peer TLS (anyone reaching it can rewrite the state)")
	fs.BoolVar(&f.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on --http, behind the admin credential (pprof)")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the admin bearer token (admin_token): required by leader transfer and snapshots")
	fs.BoolVar(&f.join, "join", false, "start as a new member of a running cluster (after zraft member add); needs --cluster-id and an empty --data")
	fs.StringVar(&f.restore, "restore", "", "backup file (zraft snapshot save): prepare this member of a NEW cluster from it (empty data dir, new --cluster-id), then start")
	fs.DurationVar(&f.clockSkew, "debug-clock-skew", 0, "test only: shift this node's local clock by DURATION (e.g. 30s, -30s)")
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return f, fs, err
}

// run is the command: main without the process (signals, exit code), so
// that tests run it in-process. It returns when ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, fs, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		fs.Usage()
		return err
	}
	if f.newClusterID {
		fmt.Println(node.NewClusterID())
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := f.config()
	if err != nil {
		return err
	}
	if f.devTLS {
		// Fresh at every start: nothing to expire or to go stale.
		if _, err := devtls.Generate(devTLSDir(cfg), devtls.DefaultValidity); err != nil {
			return err
		}
	}
	newApp := func() fsm.Application {
		s, err := kv.New(kv.DefaultConfig())
		if err != nil {
			panic(err) // the default config is valid
		}
		return s
	}

	if f.dev {
		startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := node.StartCluster(startCtx, cfg, newApp, node.WithLogger(log))
		if err != nil {
			return err
		}
		leader := c.Leader()
		fmt.Fprintf(stdout, "zraft dev cluster ready: client endpoints %s (leader %d, data in %s)\n",
			strings.Join(c.Endpoints(), ","), leader.ID(), cfg.DataDir)
		printTLSModes(stdout, cfg)
		fmt.Fprintf(stdout, "Try it:\n  %s kv set k v\n", cliCommand(f, cfg, c.Endpoints()))
		<-ctx.Done()
		log.Info("shutting down")
		return c.Close()
	}

	if f.restore != "" {
		if err := restore(cfg, f.restore); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "zraft node %d: restored from %s into %s as a member of new cluster %s\n", cfg.ID, f.restore, cfg.DataDir, cfg.ClusterID)
	}
	n, err := node.Start(ctx, cfg, newApp(), node.WithLogger(log))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "zraft node %d serving clients on %s\n", cfg.ID, n.ClientAddr())
	printTLSModes(stdout, cfg)
	<-ctx.Done()
	log.Info("shutting down")
	return n.Close()
}

// config builds the node config from the config file and the flags.
func (f flags) config() (node.Config, error) {
	cfg := node.DefaultConfig()
	if f.configFile != "" {
		var err error
		if cfg, err = node.LoadConfig(f.configFile); err != nil {
			return cfg, err
		}
	}
	if f.dev {
		ms, err := node.LocalMembers(3, f.devRaftPort, f.devClientPort)
		if err != nil {
			return cfg, err
		}
		cfg.Members = ms
		cfg.ID = 1 // each member's id is set by StartCluster
		cfg.DataDir = "zraft-data"
		if f.devHTTPPort != 0 {
			cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", f.devHTTPPort)
		}
	}
	if f.dev {
		// The dev cluster's HTTP listens on 127.0.0.1 only; it says so.
		cfg.AdminOpen = true
	}
	if f.join {
		if f.dev {
			return cfg, fmt.Errorf("%w: --join goes with a real member, not --dev", node.ErrConfig)
		}
		cfg.Join = true
	}
	if f.restore != "" && f.dev {
		return cfg, fmt.Errorf("%w: --restore goes with a real member (--id, --members, --data, --cluster-id), not --dev", node.ErrConfig)
	}
	if f.adminTokenFile != "" {
		b, err := os.ReadFile(f.adminTokenFile)
		if err != nil {
			return cfg, fmt.Errorf("%w: --admin-token-file: %v", node.ErrConfig, err)
		}
		if cfg.AdminToken = strings.TrimSpace(string(b)); cfg.AdminToken == "" {
			return cfg, fmt.Errorf("%w: --admin-token-file %s is empty", node.ErrConfig, f.adminTokenFile)
		}
	}
	if f.devTLS && !f.dev {
		return cfg, fmt.Errorf("%w: --tls goes with --dev; a real cluster takes --tls-cert, --tls-key and --tls-client-ca", node.ErrConfig)
	}
	if f.id != 0 {
		cfg.ID = f.id
	}
	if f.members != "" {
		ms, err := parseMembers(f.members)
		if err != nil {
			return cfg, err
		}
		cfg.Members = ms
	}
	if f.data != "" {
		cfg.DataDir = f.data
	}
	if f.httpAddr != "" {
		cfg.HTTPAddr = f.httpAddr
	}
	if f.keepAlive != 0 {
		cfg.KeepAliveInterval = f.keepAlive
	}
	if f.sessionTimeout != 0 {
		cfg.SessionTimeout = f.sessionTimeout
	}
	if f.clockSkew != 0 {
		cfg.ClockSkew = f.clockSkew
	}
	// Each TLS flag overrides its own field only: a flag never drops the
	// file's other TLS settings, and Validate refuses half a configuration.
	if f.tlsCert != "" {
		cfg.TLSCertFile = f.tlsCert
	}
	if f.tlsKey != "" {
		cfg.TLSKeyFile = f.tlsKey
	}
	if f.tlsClientCA != "" {
		cfg.TLSClientCAFile = f.tlsClientCA
	}
	if f.devTLS {
		if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" || cfg.TLSClientCAFile != "" {
			return cfg, fmt.Errorf("%w: --tls generates its own certificates; drop it or the other TLS settings", node.ErrConfig)
		}
		files := devtls.Paths(devTLSDir(cfg))
		cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile = files.ServerCert, files.ServerKey, files.CA
	}
	f.peerConfig(&cfg)
	return cfg, cfg.Validate()
}

// peerConfig applies the Raft-port flags given over the config file's
// fields, one field at a time.
func (f flags) peerConfig(cfg *node.Config) {
	if f.clusterID != "" {
		cfg.ClusterID = f.clusterID
	}
	if f.peerTLSCA != "" {
		cfg.PeerTLSCAFile = f.peerTLSCA
	}
	if f.peerTLSCert != "" {
		cfg.PeerTLSCertFile = f.peerTLSCert
	}
	if f.peerTLSKey != "" {
		cfg.PeerTLSKeyFile = f.peerTLSKey
	}
	if f.pprof {
		cfg.Pprof = true
	}
	if f.insecurePeer {
		cfg.InsecurePeer = true
	}
}

// devTLSDir is where --dev --tls keeps its certificates.
func devTLSDir(cfg node.Config) string { return filepath.Join(cfg.DataDir, "tls") }

// printTLSModes prints the effective TLS mode of the client port, HTTP and
// the Raft port, so that a node never runs in plaintext without saying so.
func printTLSModes(w io.Writer, cfg node.Config) {
	fmt.Fprintf(w, "client port: %s\n", cfg.ClientTLSMode())
	fmt.Fprintf(w, "HTTP: %s\n", cfg.HTTPTLSMode())
	fmt.Fprintf(w, "Raft port: %s\n", cfg.PeerTLSMode())
	fmt.Fprintf(w, "admin endpoints: %s\n", cfg.AdminMode())
}

// restore prepares the member's data dir from a backup file.
func restore(cfg node.Config, file string) error {
	fh, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("--restore: %w", err)
	}
	defer fh.Close()
	return node.Restore(cfg, fh)
}

// cliCommand is the zraft command line (without its subcommand) that
// reaches the dev cluster: endpoints that differ from the CLI's defaults
// and, with --tls, the generated CA and client certificate.
func cliCommand(f flags, cfg node.Config, endpoints []string) string {
	args := []string{"go", "run", "./cmd/zraft"}
	if f.devClientPort != 7101 {
		args = append(args, "--endpoints", strings.Join(endpoints, ","))
	}
	if f.devHTTPPort != 7301 && f.devHTTPPort != 0 {
		var https []string
		for i := range endpoints {
			https = append(https, fmt.Sprintf("127.0.0.1:%d", f.devHTTPPort+i))
		}
		args = append(args, "--http", strings.Join(https, ","))
	}
	if f.devTLS {
		files := devtls.Paths(devTLSDir(cfg))
		args = append(args, "--cacert", shellQuote(files.CA), "--cert", shellQuote(files.ClientCert),
			"--key", shellQuote(files.ClientKey))
	}
	return strings.Join(args, " ")
}

// shellQuote quotes s for a POSIX shell when it holds anything but plain
// path characters.
func shellQuote(s string) string {
	plain := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,=@", r)) {
			plain = false
		}
	}
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseMembers reads "1=10.0.0.1:7201/10.0.0.1:7101,2=...".
func parseMembers(s string) ([]node.Member, error) {
	var ms []node.Member
	for _, part := range strings.Split(s, ",") {
		idStr, addrs, ok := strings.Cut(strings.TrimSpace(part), "=")
		raft, client, ok2 := strings.Cut(addrs, "/")
		if !ok || !ok2 {
			return nil, fmt.Errorf("--members: %q is not ID=RAFTADDR/CLIENTADDR", part)
		}
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--members: id %q: %w", idStr, err)
		}
		ms = append(ms, node.Member{ID: id, RaftAddr: raft, ClientAddr: client})
	}
	return ms, nil
}
