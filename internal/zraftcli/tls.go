package zraftcli

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// commonFlags are the flags of type common, which every cluster-facing
// command accepts; each takes a value.
var commonFlags = map[string]bool{"endpoints": true, "http": true, "timeout": true, "cacert": true, "cert": true, "key": true, "admin-token": true}

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
