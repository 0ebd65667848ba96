// Package zraftcli is the zraft command-line client (cmd/zraft), in a
// package of its own so that other commands' tests can run it in-process.
package zraftcli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
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
  zraft bench [flags]          load generator with an optional raw-dragonboat baseline

Every command takes --help. Endpoints: --endpoints or ZRAFT_ENDPOINTS
(default ` + defaultEndpoints + `); HTTP endpoints for status and sessions:
--http or ZRAFT_HTTP (default ` + defaultHTTP + `).
TLS: --cacert (ZRAFT_CACERT) verifies the nodes, --cert and --key (ZRAFT_CERT,
ZRAFT_KEY) present a client certificate; either turns TLS on for the client
port and HTTP. These flags may also come before the command.
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

// commonFlags are the flags of type common, which every cluster-facing
// command accepts; each takes a value.
var commonFlags = map[string]bool{"endpoints": true, "http": true, "timeout": true, "cacert": true, "cert": true, "key": true}

// commonFlag reports whether arg ("--cacert", "-cert=x") names a common flag.
func commonFlag(arg string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return commonFlags[name]
}

// hoistCommonFlags moves common flags written before the command (zraft
// --cacert ca.pem kv get k, as with etcdctl) after it, where the command's
// own flag set reads them. Anything else before the command stays put and
// is reported as usual.
func hoistCommonFlags(args []string) []string {
	var lead []string
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && commonFlag(args[i]) {
		lead = append(lead, args[i])
		if !strings.Contains(args[i], "=") && i+1 < len(args) {
			lead = append(lead, args[i+1])
			i++
		}
		i++
	}
	if i == len(args) {
		return args // no command: reported as such
	}
	return append(append([]string(nil), args[i:]...), lead...)
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
}

// prepare checks the TLS flags, builds what the command connects with and
// prints the effective TLS mode on stderr (stdout stays the command's
// result). Half a TLS setting is a usage error, never plaintext. The
// caller calls release when done.
func (c *common) prepare(e env) error {
	var err error
	if c.tls, err = c.tlsConfig(); err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = c.tls
	c.client = &http.Client{Transport: tr}
	fmt.Fprintf(e.stderr, "zraft: %s\n", c.tlsMode())
	return nil
}

// release closes the idle HTTP connections prepare's client kept.
func (c *common) release() {
	if c.client != nil {
		c.client.CloseIdleConnections()
	}
}

func (c *common) tlsConfig() (*tls.Config, error) {
	if c.cacert == "" && c.cert == "" && c.key == "" {
		return nil, nil
	}
	if (c.cert == "") != (c.key == "") {
		return nil, fmt.Errorf("%w: --cert and --key go together (env ZRAFT_CERT, ZRAFT_KEY)", errUsage)
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.cacert != "" {
		pem, err := os.ReadFile(c.cacert)
		if err != nil {
			return nil, fmt.Errorf("%w: --cacert: %v", errUsage, err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: --cacert %s holds no PEM certificate", errUsage, c.cacert)
		}
	}
	if c.cert != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("%w: --cert/--key: %v", errUsage, err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	return t, nil
}

// tlsMode says in words how the command connects.
func (c *common) tlsMode() string {
	if c.tls == nil {
		return "plaintext (no --cacert, --cert or --key)"
	}
	ca := "the system's CAs"
	if c.cacert != "" {
		ca = c.cacert
	}
	cert := "no client certificate"
	if c.cert != "" {
		cert = "client certificate " + c.cert
	}
	return fmt.Sprintf("TLS (nodes verified with %s; %s)", ca, cert)
}

// httpURL is the URL of path on an HTTP endpoint: https under TLS.
func (c *common) httpURL(endpoint, path string) string {
	if c.tls != nil {
		return "https://" + endpoint + path
	}
	return "http://" + endpoint + path
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
