package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zraft/zraft/node"
)

const realMembers = "1=10.0.0.1:7201/10.0.0.1:7101,2=10.0.0.2:7201/10.0.0.2:7101"

func configOf(t *testing.T, args ...string) (node.Config, error) {
	t.Helper()
	f, _, err := parse(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return f.config()
}

func TestPlaintextRaftPortOffLoopbackNeedsInsecurePeer(t *testing.T) {
	base := []string{"--id", "1", "--members", realMembers, "--data", t.TempDir()}
	if _, err := configOf(t, base...); !errors.Is(err, node.ErrConfig) || !strings.Contains(err.Error(), "--insecure-peer") {
		t.Fatalf("no peer TLS on 10.0.0.1: %v, want a refusal naming --insecure-peer", err)
	}
	cfg, err := configOf(t, append(base, "--insecure-peer")...)
	if err != nil || !cfg.InsecurePeer {
		t.Fatalf("--insecure-peer: %v", err)
	}
	cfg, err = configOf(t, append(base, "--peer-tls-ca", "ca.pem", "--peer-tls-cert", "m1.pem", "--peer-tls-key", "m1-key.pem",
		"--cluster-id", "00000000000000ff")...)
	if err != nil || cfg.PeerTLSCAFile != "ca.pem" || cfg.PeerTLSCertFile != "m1.pem" || cfg.PeerTLSKeyFile != "m1-key.pem" ||
		cfg.ClusterID != "00000000000000ff" {
		t.Fatalf("peer TLS flags: %+v, %v", cfg, err)
	}
	if _, err := configOf(t, append(base, "--peer-tls-cert", "m1.pem", "--peer-tls-key", "m1-key.pem")...); !errors.Is(err, node.ErrConfig) {
		t.Fatalf("peer TLS without a CA: %v", err)
	}
}

func TestPeerFlagsMergeWithConfigFileFieldByField(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.json")
	body := `{"id": 1, "data_dir": "/var/lib/zraft", "peer_tls_ca_file": "ca.pem",
	  "members": [{"id": 1, "raft_addr": "10.0.0.1:7201", "client_addr": "10.0.0.1:7101"}]}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configOf(t, "--config", p, "--peer-tls-cert", "m1.pem", "--peer-tls-key", "m1-key.pem")
	if err != nil || cfg.PeerTLSCAFile != "ca.pem" || cfg.PeerTLSCertFile != "m1.pem" {
		t.Fatalf("file CA plus flag cert and key: %+v, %v", cfg, err)
	}
}
