// Package zraftcli is the zraft command-line client (cmd/zraft), in a
// package of its own so that other commands' tests can run it in-process.
package zraftcli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const (
	defaultEndpoints = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
	defaultHTTP      = "127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303"
)

// errUsage marks errors that are the caller's: exit code 2.
var errUsage = errors.New("usage")

// env is what every command gets: where to print and the global flags.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// Run runs the zraft command line args (without the program name) as the
// zraft binary does, printing to stdout and stderr and reading ZRAFT_*
// variables through getenv, and returns the exit code: 0 success, 1 the
// operation failed, 2 bad usage. It returns when the command is done or,
// for kv watch, when ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return run(ctx, args, env{stdout: stdout, stderr: stderr, getenv: getenv})
}

const usage = `zraft talks to a zraft cluster running the kv application.

Usage:
  zraft kv set KEY VALUE       set a key; prints OK
  zraft kv get KEY             print a key's value (exit 1: not found)
  zraft kv del KEY             delete a key; prints OK (exit 1: not found)
  zraft kv cas KEY OLD NEW     set KEY to NEW if it is OLD; prints OK (exit 1: mismatch)
  zraft kv incr KEY [N]        add N (default 1) to a decimal value; prints the result
  zraft kv watch KEY           print KEY=VALUE for every change until interrupted
  zraft status [--json]        cluster members, roles, leader, term, session count
  zraft sessions [--json]      live sessions
  zraft member list            members: id, Raft and client address, leader
  zraft member add ID RAFTADDR CLIENTADDR   add a member (admin); then start it with node --join
  zraft member remove ID       remove a member; a leader hands over first (admin)
  zraft leader transfer ID     move leadership to member ID (admin)
  zraft snapshot save FILE     write a backup of the replicated state (admin)
  zraft bench [flags]          load generator with an optional raw-dragonboat baseline

Every command takes --help. Endpoints: --endpoints or ZRAFT_ENDPOINTS
(default ` + defaultEndpoints + `); HTTP endpoints for status and sessions:
--http or ZRAFT_HTTP (default ` + defaultHTTP + `).
TLS: --cacert (ZRAFT_CACERT) verifies the nodes, --cert and --key (ZRAFT_CERT,
ZRAFT_KEY) present a client certificate; either turns TLS on for the client
port and HTTP. Admin commands send --admin-token (ZRAFT_ADMIN_TOKEN) as a
bearer token. These flags may also come before the command.
`

func run(ctx context.Context, args []string, e env) int {
	err := dispatch(ctx, args, e)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(e.stderr, "zraft:", strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	default:
		fmt.Fprintln(e.stderr, err)
		return 1
	}
}

func dispatch(ctx context.Context, args []string, e env) error {
	args = hoistCommonFlags(args)
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && commonFlag(args[0]) {
		fmt.Fprint(e.stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "kv":
		return kvCommand(ctx, args[1:], e)
	case "status":
		return statusCommand(ctx, args[1:], e)
	case "sessions":
		return sessionsCommand(ctx, args[1:], e)
	case "member":
		return memberCommand(ctx, args[1:], e)
	case "leader":
		return leaderCommand(ctx, args[1:], e)
	case "snapshot":
		return snapshotCommand(ctx, args[1:], e)
	case "bench":
		return benchCommand(ctx, args[1:], e)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(e.stdout, usage)
		return nil
	default:
		fmt.Fprint(e.stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
}

// common are the flags every cluster-facing command accepts, and what
// prepare derives from them.
type common struct {
	endpoints string
	http      string
	timeout   time.Duration
	cacert    string
	cert      string
	key       string
	// adminToken is sent as a bearer token by the admin commands.
	adminToken string

	tls    *tls.Config  // nil: plaintext
	client *http.Client // for the HTTP endpoints
}

func (c *common) register(fs *flag.FlagSet, e env) {
	fs.StringVar(&c.endpoints, "endpoints", firstNonEmpty(e.getenv("ZRAFT_ENDPOINTS"), defaultEndpoints),
		"comma-separated client endpoints (env ZRAFT_ENDPOINTS)")
	fs.StringVar(&c.http, "http", firstNonEmpty(e.getenv("ZRAFT_HTTP"), defaultHTTP),
		"comma-separated HTTP endpoints of the members, for status and sessions (env ZRAFT_HTTP)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "give up after this long")
	fs.StringVar(&c.cacert, "cacert", e.getenv("ZRAFT_CACERT"),
		"CA certificate file (PEM) that signed the nodes' certificates; turns TLS on (env ZRAFT_CACERT)")
	fs.StringVar(&c.cert, "cert", e.getenv("ZRAFT_CERT"),
		"client certificate file (PEM) for clusters that require one; turns TLS on (env ZRAFT_CERT)")
	fs.StringVar(&c.key, "key", e.getenv("ZRAFT_KEY"), "key file (PEM) of --cert (env ZRAFT_KEY)")
	fs.StringVar(&c.adminToken, "admin-token", e.getenv("ZRAFT_ADMIN_TOKEN"),
		"admin credential for leader transfer and snapshot save (env ZRAFT_ADMIN_TOKEN, preferred: a flag shows in ps)")
}

func (c *common) endpointList() []string { return splitList(c.endpoints) }
func (c *common) httpList() []string     { return splitList(c.http) }

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// newFlags returns a flag set that prints its usage to stderr and reports
// parse errors as usage errors.
func newFlags(name, synopsis string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	// Flags may come before or after the positional arguments.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}
