package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
)

// ClientTLSMode says in words how the client port is secured, for the
// start-up line of cmd/node: "plaintext", "TLS (server certificate only ...)"
// or "TLS (mutual ...)". Call it on a validated config.
func (c *Config) ClientTLSMode() string {
	switch {
	case c.TLSCertFile == "":
		return "plaintext (no TLS: session secrets and data travel in clear)"
	case c.TLSClientCAFile == "":
		return fmt.Sprintf("TLS (certificate %s; clients are not authenticated)", c.TLSCertFile)
	default:
		return fmt.Sprintf("TLS (mutual: certificate %s; clients need a certificate signed by %s)", c.TLSCertFile, c.TLSClientCAFile)
	}
}

// HTTPTLSMode says in words how the HTTP endpoints are served: "off",
// "plaintext", or TLS with the client port's certificate and, under mutual
// TLS, which paths need a client certificate.
func (c *Config) HTTPTLSMode() string {
	switch {
	case c.HTTPAddr == "":
		return "off"
	case c.TLSCertFile == "":
		return "plaintext"
	case c.TLSClientCAFile == "":
		return "TLS (the client port's certificate)"
	default:
		return "TLS (the client port's certificate; /status and /sessions need a client certificate, /metrics and /healthz do not)"
	}
}

// publicHTTPPaths are served under mutual TLS to clients without a
// certificate: what monitoring (Prometheus, load balancer health checks)
// needs and nothing that helps an attacker forge traffic. Every other path,
// including paths added later, needs a verified client certificate.
var publicHTTPPaths = map[string]bool{"/metrics": true, "/healthz": true}

// httpTLS returns the listener and handler the HTTP endpoints serve on: as
// given without TLS; with TLS, ln wrapped in the client port's certificate
// and, under mutual TLS, h behind requireClientCert. A client certificate is
// verified when one is given, so a certificate from another CA fails the
// handshake on every path.
func (c *Config) httpTLS(ln net.Listener, h http.Handler) (net.Listener, http.Handler, error) {
	t, err := c.tlsConfig()
	if err != nil || t == nil {
		return ln, h, err
	}
	if t.ClientCAs != nil {
		t.ClientAuth = tls.VerifyClientCertIfGiven
		h = requireClientCert(h)
	}
	t.NextProtos = []string{"http/1.1"}
	return tls.NewListener(ln, t), h, nil
}

func requireClientCert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !publicHTTPPaths[r.URL.Path] && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			http.Error(w, "client certificate required: this node uses mutual TLS; present a certificate signed by its client CA",
				http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
