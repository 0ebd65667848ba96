package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zraft/zraft/internal/testio"
	"github.com/zraft/zraft/internal/testnet"
	"github.com/zraft/zraft/internal/zraftcli"
	"github.com/zraft/zraft/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTLSFlagsAndFile drives every combination of TLS settings in a config
// file and on the command line that the issue names: each either gives the
// TLS configuration it says or refuses to start with a message naming the
// missing piece. Flags override the file field by field.
func TestTLSFlagsAndFile(t *testing.T) {
	dir := t.TempDir()
	writeConfig := func(tls map[string]string) string {
		cfg := map[string]any{
			"id": 1, "data_dir": filepath.Join(dir, "data"),
			"members": []map[string]any{{"id": 1, "raft_addr": "127.0.0.1:7201", "client_addr": "127.0.0.1:7101"}},
		}
		for k, v := range tls {
			cfg[k] = v
		}
		b, _ := json.Marshal(cfg)
		path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	mutualFile := map[string]string{"tls_cert_file": "f.crt", "tls_key_file": "f.key", "tls_client_ca_file": "f-ca.pem"}
	serverFile := map[string]string{"tls_cert_file": "f.crt", "tls_key_file": "f.key"}
	type want struct{ cert, key, ca string }
	for _, tc := range []struct {
		name    string
		file    map[string]string // nil: no config file
		flags   []string
		want    want
		wantErr string // non-empty: start-up must fail with this in the message
	}{
		{name: "nothing is plaintext"},
		{name: "flags: cert and key", flags: []string{"--tls-cert", "a.crt", "--tls-key", "a.key"},
			want: want{"a.crt", "a.key", ""}},
		{name: "flags: mutual", flags: []string{"--tls-cert", "a.crt", "--tls-key", "a.key", "--tls-client-ca", "ca.pem"},
			want: want{"a.crt", "a.key", "ca.pem"}},
		// The issue: this started the node in plaintext without a word.
		{name: "flags: client CA alone", flags: []string{"--tls-client-ca", "ca.pem"},
			wantErr: "tls_client_ca_file needs tls_cert_file"},
		{name: "flags: cert alone", flags: []string{"--tls-cert", "a.crt"}, wantErr: "go together"},
		{name: "flags: key alone", flags: []string{"--tls-key", "a.key"}, wantErr: "go together"},
		{name: "flags: cert and CA, no key", flags: []string{"--tls-cert", "a.crt", "--tls-client-ca", "ca.pem"},
			wantErr: "go together"},
		{name: "file: mutual", file: mutualFile, want: want{"f.crt", "f.key", "f-ca.pem"}},
		{name: "file: server", file: serverFile, want: want{"f.crt", "f.key", ""}},
		{name: "file: client CA alone", file: map[string]string{"tls_client_ca_file": "f-ca.pem"},
			wantErr: "tls_client_ca_file needs tls_cert_file"},
		{name: "file: cert alone", file: map[string]string{"tls_cert_file": "f.crt"}, wantErr: "go together"},
		// The issue: these flags silently turned the file's mutual TLS off.
		{name: "file mutual + flags cert and key", file: mutualFile, flags: []string{"--tls-cert", "a.crt", "--tls-key", "a.key"},
			want: want{"a.crt", "a.key", "f-ca.pem"}},
		{name: "file server + flag client CA", file: serverFile, flags: []string{"--tls-client-ca", "ca.pem"},
			want: want{"f.crt", "f.key", "ca.pem"}},
		{name: "file mutual + flag client CA", file: mutualFile, flags: []string{"--tls-client-ca", "ca.pem"},
			want: want{"f.crt", "f.key", "ca.pem"}},
		{name: "file server + flag key", file: serverFile, flags: []string{"--tls-key", "a.key"},
			want: want{"f.crt", "a.key", ""}},
		{name: "file CA alone + flags cert and key", file: map[string]string{"tls_client_ca_file": "f-ca.pem"},
			flags: []string{"--tls-cert", "a.crt", "--tls-key", "a.key"}, want: want{"a.crt", "a.key", "f-ca.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--id", "1", "--members", "1=127.0.0.1:7201/127.0.0.1:7101", "--data", filepath.Join(dir, "data")}
			if tc.file != nil {
				args = []string{"--config", writeConfig(tc.file)}
			}
			f, _, err := parse(append(args, tc.flags...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := f.config()
			if tc.wantErr != "" {
				if !errors.Is(err, node.ErrConfig) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("config error %v; want an ErrConfig saying %q (TLS cert %q key %q client CA %q)",
						err, tc.wantErr, cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile}
			if got != tc.want {
				t.Fatalf("TLS cert/key/client CA = %q; want %q", got, tc.want)
			}
			// What the node prints at start says the same.
			var mode strings.Builder
			printTLSModes(&mode, cfg)
			wantMode := "client port: plaintext"
			switch {
			case tc.want.ca != "":
				wantMode = "client port: TLS (mutual: certificate " + tc.want.cert + "; clients need a certificate signed by " + tc.want.ca + ")"
			case tc.want.cert != "":
				wantMode = "client port: TLS (certificate " + tc.want.cert + "; clients are not authenticated)"
			}
			if !strings.HasPrefix(mode.String(), wantMode) {
				t.Fatalf("start-up lines %q; want them to begin with %q", mode.String(), wantMode)
			}
		})
	}
}

// TestDevTLS runs node --dev --tls as a user would, in-process, on free
// ports in a temporary data directory, then runs the zraft command it
// prints: it writes and reads through mutual TLS and reads the HTTP status,
// and the same command without the TLS flags is refused.
func TestDevTLS(t *testing.T) {
	dir := t.TempDir()
	base := testnet.ConsecutivePorts(t, 9)
	ctx, cancel := context.WithCancel(context.Background())
	var out testio.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--dev", "--tls", "--data", dir, "--log-level", "error",
			"--dev-client-port", strconv.Itoa(base), "--dev-raft-port", strconv.Itoa(base + 3),
			"--dev-http-port", strconv.Itoa(base + 6)}, &out, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node --dev --tls: %v", err)
		}
	})
	var command []string
	deadline := time.Now().Add(30 * time.Second)
	for command == nil {
		for _, line := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(line); len(f) > 3 && strings.Join(f[:3], " ") == "go run ./cmd/zraft" {
				command = f[3:]
			}
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("node --dev --tls ended: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("node --dev --tls printed no zraft command:\n%s", out.String())
		}
	}
	printed := out.String()
	for _, want := range []string{"client port: TLS (mutual", "HTTP: TLS", filepath.Join(dir, "tls", "ca.pem")} {
		if !strings.Contains(printed, want) {
			t.Errorf("node --dev --tls printed %q; want it to mention %q", printed, want)
		}
	}
	// The printed command ends with an example subcommand (kv set k v).
	if len(command) < 4 || strings.Join(command[len(command)-4:], " ") != "kv set k v" {
		t.Fatalf("printed command %q does not end with kv set k v", command)
	}
	flags := command[:len(command)-4]
	zraft := func(args ...string) (int, string, string) {
		var o, e testio.SyncBuffer
		code := zraftcli.Run(context.Background(), args, &o, &e, func(string) string { return "" })
		return code, o.String(), e.String()
	}
	if code, o, e := zraft(command...); code != 0 || o != "OK\n" {
		t.Fatalf("the printed command %q: exit %d, %q, %q", command, code, o, e)
	}
	if code, o, e := zraft(append(flags, "kv", "get", "k")...); code != 0 || o != "v\n" {
		t.Fatalf("kv get with the printed flags: exit %d, %q, %q", code, o, e)
	}
	if code, o, e := zraft(append(flags, "status")...); code != 0 || strings.Count(o, "leader") != 1 {
		t.Fatalf("status with the printed flags: exit %d\n%s%s", code, o, e)
	}
	// Without the TLS flags: refused.
	var plain []string
	for i := 0; i < len(flags); i += 2 {
		if flags[i] == "--endpoints" || flags[i] == "--http" {
			plain = append(plain, flags[i], flags[i+1])
		}
	}
	if code, o, e := zraft(append(plain, "kv", "get", "k", "--timeout", "1s")...); code != 1 || o != "" {
		t.Fatalf("kv get without TLS flags against --dev --tls: exit %d, %q, %q", code, o, e)
	}
}

// TestHalfTLSRefusesToStart runs the command as main does: half a TLS
// setting ends it with the reason before anything listens or prints.
func TestHalfTLSRefusesToStart(t *testing.T) {
	for _, extra := range [][]string{{"--tls-client-ca", "ca.pem"}, {"--tls-key", "a.key"}, {"--tls"}} {
		var out, errOut testio.SyncBuffer
		args := append([]string{"--id", "1", "--members", "1=127.0.0.1:1/127.0.0.1:2", "--data", t.TempDir()}, extra...)
		err := run(context.Background(), args, &out, &errOut)
		if !errors.Is(err, node.ErrConfig) || out.String() != "" {
			t.Errorf("node %q: %v, stdout %q; want an ErrConfig and nothing started", extra, err, out.String())
		}
	}
}
