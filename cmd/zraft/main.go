// Command zraft is the command-line client of a zraft cluster running the
// built-in key-value application.
//
//	zraft kv set KEY VALUE      prints OK
//	zraft kv get KEY            prints the value; exit 1 with "not found"
//	zraft kv del KEY            prints OK; exit 1 with "not found"
//	zraft kv cas KEY OLD NEW    prints OK; exit 1 with "mismatch"
//	zraft kv incr KEY [N]       prints the new value
//	zraft kv watch KEY          prints KEY=VALUE per change until interrupted
//	zraft status [--json]       members, roles, leader, term, sessions
//	zraft sessions [--json]     live sessions
//	zraft bench [flags]         load generator (see zraft bench --help)
//
// Client endpoints come from --endpoints or ZRAFT_ENDPOINTS (default: the
// `node --dev` cluster, 127.0.0.1:7101-7103); status and sessions use the
// members' HTTP endpoints from --http or ZRAFT_HTTP (default 127.0.0.1:7301-7303).
//
// Exit codes: 0 success, 1 the operation failed (not found, mismatch,
// unreachable cluster, timeout: the message says which), 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
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
  zraft bench [flags]          load generator with an optional raw-dragonboat baseline

Every command takes --help. Endpoints: --endpoints or ZRAFT_ENDPOINTS
(default ` + defaultEndpoints + `); HTTP endpoints for status and sessions:
--http or ZRAFT_HTTP (default ` + defaultHTTP + `).
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
	if len(args) == 0 {
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

// common are the flags every cluster-facing command accepts.
type common struct {
	endpoints string
	http      string
	timeout   time.Duration
}

func (c *common) register(fs *flag.FlagSet, e env) {
	fs.StringVar(&c.endpoints, "endpoints", firstNonEmpty(e.getenv("ZRAFT_ENDPOINTS"), defaultEndpoints),
		"comma-separated client endpoints (env ZRAFT_ENDPOINTS)")
	fs.StringVar(&c.http, "http", firstNonEmpty(e.getenv("ZRAFT_HTTP"), defaultHTTP),
		"comma-separated HTTP endpoints of the members, for status and sessions (env ZRAFT_HTTP)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "give up after this long")
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
