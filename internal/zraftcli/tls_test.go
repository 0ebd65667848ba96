package zraftcli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/internal/devtls"
	"github.com/zraft/zraft/node"
)

// startTLSCluster starts a cluster whose client port and HTTP serve TLS with
// certificates of a fresh CA, mutual when mutual is set.
func startTLSCluster(t *testing.T, mutual bool) (*cli, devtls.Files) {
	t.Helper()
	files, err := devtls.Generate(filepath.Join(t.TempDir(), "tls"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := startCLIClusterWith(t, func(cfg *node.Config) {
		cfg.TLSCertFile, cfg.TLSKeyFile = files.ServerCert, files.ServerKey
		if mutual {
			cfg.TLSClientCAFile = files.CA
		}
	})
	return c, files
}

// run runs the CLI with the given extra environment and returns exit code,
// stdout and stderr.
func (c *cli) runWith(env map[string]string, args ...string) (int, string, string) {
	c.t.Helper()
	saved := c.envs
	c.envs = map[string]string{}
	for k, v := range saved {
		c.envs[k] = v
	}
	for k, v := range env {
		c.envs[k] = v
	}
	defer func() { c.envs = saved }()
	return c.zraft(context.Background(), args...)
}

// TestCLIThroughMutualTLS: with --cacert, --cert and --key (as flags after
// or before the command, or as ZRAFT_* variables) the CLI writes, reads and
// reads the HTTP endpoints of a cluster with mutual TLS, and says so.
func TestCLIThroughMutualTLS(t *testing.T) {
	c, files := startTLSCluster(t, true)
	tlsFlags := []string{"--cacert", files.CA, "--cert", files.ClientCert, "--key", files.ClientKey}
	wantMode := "zraft: TLS (nodes verified with " + files.CA + "; client certificate " + files.ClientCert + ")"

	code, out, errOut := c.runWith(nil, append([]string{"kv", "set", "color", "red"}, tlsFlags...)...)
	if code != 0 || out != "OK\n" || !strings.Contains(errOut, wantMode) {
		t.Fatalf("kv set with TLS flags: exit %d, %q, %q", code, out, errOut)
	}
	code, out, errOut = c.runWith(nil, append(tlsFlags, "kv", "get", "color")...)
	if code != 0 || out != "red\n" {
		t.Fatalf("kv get with TLS flags before the command: exit %d, %q, %q", code, out, errOut)
	}
	env := map[string]string{"ZRAFT_CACERT": files.CA, "ZRAFT_CERT": files.ClientCert, "ZRAFT_KEY": files.ClientKey}
	code, out, errOut = c.runWith(env, "kv", "incr", "n", "7")
	if code != 0 || out != "7\n" || !strings.Contains(errOut, wantMode) {
		t.Fatalf("kv incr with ZRAFT_* TLS variables: exit %d, %q, %q", code, out, errOut)
	}
	code, out, errOut = c.runWith(env, "status")
	if code != 0 || strings.Count(out, "leader") != 1 || strings.Count(out, "follower") != 2 {
		t.Fatalf("status over https: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = c.runWith(env, "sessions")
	if code != 0 || !strings.Contains(out, "sessions\n") {
		t.Fatalf("sessions over https: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = c.runWith(env, "bench", "--sessions", "1", "--inflight", "1", "--duration", "200ms",
		"--warmup", "0s", "--keys", "5", "--json", "--quiet")
	if code != 0 || !strings.Contains(out, `"errors": 0`) {
		t.Fatalf("bench over TLS: exit %d\n%s%s", code, out, errOut)
	}
}

// TestCLIRefusedWithoutTheRightCredentials: against mutual TLS, a CLI
// without a client certificate, with another CA's certificate or without
// TLS gets nothing, and the message says what to check.
func TestCLIRefusedWithoutTheRightCredentials(t *testing.T) {
	c, files := startTLSCluster(t, true)
	other, err := devtls.Generate(filepath.Join(t.TempDir(), "other"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate problem is client.ErrTLS, reported at once (the timeout
	// is long: a CLI that retried would report the deadline instead).
	for _, tc := range []struct {
		name     string
		env      map[string]string
		timeout  string
		wantErrs []string
	}{
		{"no client certificate", map[string]string{"ZRAFT_CACERT": files.CA}, "30s",
			[]string{"client: TLS handshake failed", "certificate required", "give a client certificate with --cert and --key"}},
		{"another CA's client certificate", map[string]string{"ZRAFT_CACERT": files.CA, "ZRAFT_CERT": other.ClientCert,
			"ZRAFT_KEY": other.ClientKey}, "30s",
			[]string{"client: TLS handshake failed", "unknown certificate authority", "check that --cacert"}},
		{"nodes' CA unknown", map[string]string{"ZRAFT_CACERT": other.CA, "ZRAFT_CERT": files.ClientCert,
			"ZRAFT_KEY": files.ClientKey}, "30s",
			[]string{"client: TLS handshake failed", "certificate signed by unknown authority", "check that --cacert"}},
		{"plaintext", nil, "1s", []string{"cannot reach the cluster", "if the cluster uses TLS, give --cacert"}},
	} {
		code, out, errOut := c.runWith(tc.env, "kv", "get", "k", "--timeout", tc.timeout)
		t.Logf("%s: %s", tc.name, errOut)
		if code != 1 || out != "" {
			t.Errorf("%s: kv get: exit %d, %q, %q; want exit 1", tc.name, code, out, errOut)
		}
		for _, want := range tc.wantErrs {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s: kv get said %q; want it to say %q", tc.name, errOut, want)
			}
		}
	}
	// HTTP: /status needs the client certificate too.
	code, out, errOut := c.runWith(map[string]string{"ZRAFT_CACERT": files.CA}, "status", "--timeout", "2s")
	if code != 1 || !strings.Contains(out, "unreachable") || !strings.Contains(errOut, "403 Forbidden: client certificate required") {
		t.Fatalf("status without a client certificate: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = c.runWith(map[string]string{"ZRAFT_CACERT": files.CA}, "status", "--json", "--timeout", "2s")
	if code != 1 || !strings.Contains(out, "client certificate required") {
		t.Fatalf("status --json without a client certificate: exit %d\n%s%s", code, out, errOut)
	}
}

// TestCLIServerOnlyTLS: a cluster with TLS but no client CA is reached with
// --cacert alone.
func TestCLIServerOnlyTLS(t *testing.T) {
	c, files := startTLSCluster(t, false)
	env := map[string]string{"ZRAFT_CACERT": files.CA}
	if code, out, errOut := c.runWith(env, "kv", "set", "a", "1"); code != 0 || out != "OK\n" ||
		!strings.Contains(errOut, "no client certificate") {
		t.Fatalf("kv set: exit %d, %q, %q", code, out, errOut)
	}
	if code, out, errOut := c.runWith(env, "status"); code != 0 || strings.Count(out, "leader") != 1 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
}

// TestCLITLSUsage: half a TLS setting or an unreadable file is a usage
// error before anything is sent, never a plaintext connection.
func TestCLITLSUsage(t *testing.T) {
	files, err := devtls.Generate(filepath.Join(t.TempDir(), "tls"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, envs: map[string]string{"ZRAFT_ENDPOINTS": "127.0.0.1:1", "ZRAFT_HTTP": "127.0.0.1:1"}}
	c.expect("kv get k --cert "+files.ClientCert, 2, "", "--cert and --key go together")
	c.expect("kv get k --key "+files.ClientKey, 2, "", "--cert and --key go together")
	c.expect("status --cacert /nonexistent/ca.pem", 2, "", "--cacert")
	c.expect("kv get k --cacert "+files.ClientKey, 2, "", "holds no PEM certificate")
	c.expect("kv get k --cert "+files.ClientCert+" --key "+files.ServerKey, 2, "", "--cert/--key")
	c.expect("--cacert "+files.CA, 2, "", "no command")
	c.expect("kv get k --timeout 300ms", 1, "", "zraft: plaintext")
}
