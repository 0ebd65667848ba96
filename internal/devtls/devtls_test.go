package devtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestGenerateWritesAVerifiableSet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	f, err := Generate(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	check := func(certPath, keyPath string, usage x509.ExtKeyUsage, name string) {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			t.Fatal(err)
		}
		_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			t.Fatalf("%s does not verify for %q: %v", certPath, name, err)
		}
		if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v; want 0600", keyPath, st.Mode(), err)
		}
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		check(f.ServerCert, f.ServerKey, x509.ExtKeyUsageServerAuth, host)
	}
	check(f.ServerCert, f.ServerKey, x509.ExtKeyUsageClientAuth, "")
	check(f.ClientCert, f.ClientKey, x509.ExtKeyUsageClientAuth, "")

	// The client certificate cannot pose as a server.
	pair, _ := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("client certificate verifies for server authentication")
	}

	// A second set is a different CA: it does not trust the first.
	g, err := Generate(dir+"2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := tls.LoadX509KeyPair(g.ClientCert, g.ClientKey)
	if _, err := other.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("a certificate of another generated CA verifies against the first")
	}
}

func TestGenerateRefusesBadInput(t *testing.T) {
	if _, err := Generate(t.TempDir(), 0); !errors.Is(err, ErrDevTLS) {
		t.Fatalf("zero validity: %v, want ErrDevTLS", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(filepath.Join(file, "tls"), time.Hour); !errors.Is(err, ErrDevTLS) {
		t.Fatalf("dir under a file: %v, want ErrDevTLS", err)
	}
}
