package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zraft/zraft/node"
)

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
		})
	}
}
