// Package devtls writes a throwaway certificate authority and certificates
// signed by it, for trying TLS on 127.0.0.1 (`node --dev --tls`) and for
// tests. Nothing here is fit for production: the CA key is not kept, so the
// set cannot be extended, only generated afresh.
package devtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DefaultValidity is how long generated certificates are valid: long enough
// for a dev cluster left running over a holiday, short enough that a copy
// lying around stops working.
const DefaultValidity = 30 * 24 * time.Hour

// ErrDevTLS is wrapped by every error of Generate.
var ErrDevTLS = errors.New("devtls: cannot generate certificates")

// Files are the paths of a generated set, all in one directory.
type Files struct {
	// CA is the CA certificate (PEM): clients verify the server with it and
	// the server verifies client certificates with it.
	CA string
	// ServerCert and ServerKey are the server's certificate and key, valid
	// for 127.0.0.1, ::1 and localhost, usable for server and client
	// authentication (so a member can also present it to its peers).
	ServerCert, ServerKey string
	// ClientCert and ClientKey are a client certificate and key (client
	// authentication only), for the zraft CLI or an application.
	ClientCert, ClientKey string
}

// Paths returns the paths Generate writes in dir.
func Paths(dir string) Files {
	return Files{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
}

// Generate creates dir if needed and writes a fresh CA (ca.pem), a server
// certificate (server.pem, server-key.pem) and a client certificate
// (client.pem, client-key.pem) valid from an hour ago for validity, all with
// ECDSA P-256 keys. Existing files of these names are replaced. Keys are
// written readable by the owner only.
func Generate(dir string, validity time.Duration) (Files, error) {
	if validity <= 0 {
		return Files{}, fmt.Errorf("%w: validity %v is not positive", ErrDevTLS, validity)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, fmt.Errorf("%w: %v", ErrDevTLS, err)
	}
	f := Paths(dir)
	notBefore := time.Now().Add(-time.Hour) // tolerate clocks a little behind
	notAfter := notBefore.Add(time.Hour + validity)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("%w: %v", ErrDevTLS, err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "zraft dev CA", Organization: []string{"zraft dev (throwaway)"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Files{}, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Files{}, fmt.Errorf("%w: %v", ErrDevTLS, err)
	}
	if err := writePEM(f.CA, "CERTIFICATE", caDER, 0o644); err != nil {
		return Files{}, err
	}

	leaf := func(name string, usage []x509.ExtKeyUsage, server bool, certPath, keyPath string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrDevTLS, err)
		}
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: name, Organization: []string{"zraft dev (throwaway)"}},
			NotBefore:   notBefore,
			NotAfter:    notAfter,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: usage,
		}
		if server {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := sign(tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrDevTLS, err)
		}
		if err := writePEM(keyPath, "PRIVATE KEY", keyDER, 0o600); err != nil {
			return err
		}
		return writePEM(certPath, "CERTIFICATE", der, 0o644)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if err := leaf("zraft dev server", both, true, f.ServerCert, f.ServerKey); err != nil {
		return Files{}, err
	}
	if err := leaf("zraft dev client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false, f.ClientCert, f.ClientKey); err != nil {
		return Files{}, err
	}
	return f, nil
}

// sign issues tmpl, signed by parent's key, with a random 128-bit serial.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDevTLS, err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDevTLS, err)
	}
	return der, nil
}

// writePEM replaces path atomically (write a temporary file, rename), so a
// reader never sees half a file.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("%w: %v", ErrDevTLS, err)
	}
	if err := os.Chmod(tmp, mode); err != nil { // WriteFile keeps an existing file's mode
		return fmt.Errorf("%w: %v", ErrDevTLS, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%w: %v", ErrDevTLS, err)
	}
	return nil
}
