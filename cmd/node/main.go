// Command node runs zraft nodes serving the built-in key-value application.
//
//	node --dev                       a 3-node cluster in this process on 127.0.0.1
//	node --config member.json        one member of a real cluster
//	node --id 1 --members 1=10.0.0.1:7201/10.0.0.1:7101,2=...,3=... --data /var/lib/zraft
//
// In --dev mode the client endpoints are 127.0.0.1:7101-7103 (change the
// first port with --dev-client-port), the Raft ports 7201-7203 and the HTTP
// endpoints (/metrics, /healthz, /status) 7301-7303. Data goes to --data
// (default ./zraft-data). The process runs until SIGINT or SIGTERM, then
// shuts down gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type flags struct {
	dev            bool
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
	clockSkew      time.Duration
}

func parse(args []string) (flags, *flag.FlagSet, error) {
	var f flags
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage:\n  node --dev [--data DIR]\n  node --config FILE\n  node --id N --members ID=RAFT/CLIENT,... --data DIR [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.BoolVar(&f.dev, "dev", false, "run a 3-node cluster in this process on 127.0.0.1")
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
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file for client connections")
	fs.StringVar(&f.tlsKey, "tls-key", "", "TLS key file for client connections")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "CA file: require client certificates it signed")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&f.clockSkew, "debug-clock-skew", 0, "test only: shift this node's local clock by DURATION (e.g. 30s, -30s)")
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return f, fs, err
}

func run(args []string) error {
	f, fs, err := parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		fs.Usage()
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := f.config()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
		fmt.Printf("zraft dev cluster ready: client endpoints %s (leader %d, data in %s)\n",
			strings.Join(c.Endpoints(), ","), leader.ID(), cfg.DataDir)
		<-ctx.Done()
		log.Info("shutting down")
		return c.Close()
	}

	n, err := node.Start(ctx, cfg, newApp(), node.WithLogger(log))
	if err != nil {
		return err
	}
	fmt.Printf("zraft node %d serving clients on %s\n", cfg.ID, n.ClientAddr())
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
	if f.tlsCert != "" {
		cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile = f.tlsCert, f.tlsKey, f.tlsClientCA
	}
	return cfg, cfg.Validate()
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
