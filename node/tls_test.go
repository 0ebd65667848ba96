package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/internal/devtls"
)

func TestConfigValidateHalfTLS(t *testing.T) {
	for name, tc := range map[string]struct {
		cert, key, ca string
		want          string // "" valid
	}{
		"none":         {},
		"cert and key": {cert: "c", key: "k"},
		"mutual":       {cert: "c", key: "k", ca: "ca"},
		"cert alone":   {cert: "c", want: "go together"},
		"key alone":    {key: "k", want: "go together"},
		"CA alone":     {ca: "ca", want: "tls_client_ca_file needs tls_cert_file"},
		"cert and CA":  {cert: "c", ca: "ca", want: "go together"},
		"key and CA":   {key: "k", ca: "ca", want: "go together"},
	} {
		c := validConfig()
		c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = tc.cert, tc.key, tc.ca
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want valid", name, err)
		case tc.want != "" && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an ErrConfig saying %q", name, err, tc.want)
		}
	}
}

func TestTLSModes(t *testing.T) {
	c := validConfig()
	c.HTTPAddr = "127.0.0.1:1"
	if m, h := c.ClientTLSMode(), c.HTTPTLSMode(); !strings.HasPrefix(m, "plaintext") || h != "plaintext" {
		t.Fatalf("no TLS: %q, %q", m, h)
	}
	c.TLSCertFile, c.TLSKeyFile = "s.pem", "s-key.pem"
	if m, h := c.ClientTLSMode(), c.HTTPTLSMode(); !strings.Contains(m, "clients are not authenticated") || !strings.HasPrefix(h, "TLS") {
		t.Fatalf("server TLS: %q, %q", m, h)
	}
	c.TLSClientCAFile = "ca.pem"
	if m, h := c.ClientTLSMode(), c.HTTPTLSMode(); !strings.HasPrefix(m, "TLS (mutual") || !strings.Contains(m, "ca.pem") ||
		!strings.Contains(h, "/status and /sessions need a client certificate") {
		t.Fatalf("mutual TLS: %q, %q", m, h)
	}
	c.HTTPAddr = ""
	if h := c.HTTPTLSMode(); h != "off" {
		t.Fatalf("no HTTP: %q", h)
	}
}

// TestHTTPServesTLS: with mutual TLS on the client port, the HTTP endpoints
// serve TLS with the same certificate; /metrics and /healthz answer without
// a client certificate, /status and /sessions only with one; plaintext HTTP
// and certificates of another CA get nothing.
func TestHTTPServesTLS(t *testing.T) {
	files, err := devtls.Generate(filepath.Join(t.TempDir(), "tls"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := devtls.Generate(filepath.Join(t.TempDir(), "other"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c := startTestCluster(t, func(cfg *Config) {
		cfg.HTTPAddr = ""
		cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile = files.ServerCert, files.ServerKey, files.CA
	})
	n := c.Node(1)
	n.cfg.HTTPAddr = "127.0.0.1:" + itoa(port)
	if err := n.startHTTP(); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	clientCert, err := tls.LoadX509KeyPair(files.ClientCert, files.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := tls.LoadX509KeyPair(other.ClientCert, other.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	get := func(scheme, path string, certs ...tls.Certificate) (int, string, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(scheme + "://" + n.cfg.HTTPAddr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	for _, tc := range []struct {
		path  string
		certs []tls.Certificate
		want  int
	}{
		{"/healthz", nil, 200},
		{"/metrics", nil, 200},
		{"/status", nil, 403},
		{"/sessions", nil, 403},
		{"/status", []tls.Certificate{clientCert}, 200},
		{"/sessions", []tls.Certificate{clientCert}, 200},
		{"/metrics", []tls.Certificate{clientCert}, 200},
	} {
		code, body, err := get("https", tc.path, tc.certs...)
		if err != nil || code != tc.want {
			t.Errorf("https %s with %d certificates: %d %q %v; want %d", tc.path, len(tc.certs), code, body, err, tc.want)
		}
		if code == 403 && !strings.Contains(body, "client certificate required") {
			t.Errorf("https %s refused with %q; want it to say a client certificate is required", tc.path, body)
		}
	}
	for _, path := range []string{"/status", "/healthz"} {
		if code, body, err := get("https", path, otherCert); err == nil {
			t.Errorf("https %s with another CA's certificate: %d %q; want the handshake refused", path, code, body)
		}
		if code, body, err := get("http", path); err == nil && (code == 200 || strings.Contains(body, "ok")) {
			t.Errorf("plaintext http %s: %d %q; want no answer", path, code, body)
		}
	}
}

// TestTLSFilesThatDoNotLoad: files that do not load stop the start with
// an ErrConfig naming them, never a node in plaintext.
func TestTLSFilesThatDoNotLoad(t *testing.T) {
	files, err := devtls.Generate(filepath.Join(t.TempDir(), "tls"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cert, key, ca string
		want          string
	}{
		"missing cert":      {"/nonexistent.pem", files.ServerKey, "", "tls_cert_file /nonexistent.pem"},
		"mismatched key":    {files.ServerCert, files.ClientKey, "", "tls_key_file " + files.ClientKey},
		"missing client CA": {files.ServerCert, files.ServerKey, "/nonexistent-ca.pem", "tls_client_ca_file"},
		"CA without PEM":    {files.ServerCert, files.ServerKey, files.ServerKey, "holds no PEM certificate"},
	} {
		c := validConfig()
		c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = tc.cert, tc.key, tc.ca
		_, err := c.tlsConfig()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an ErrConfig saying %q", name, err, tc.want)
		}
	}
}
