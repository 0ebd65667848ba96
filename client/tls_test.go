package client

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/zraft/zraft/internal/testcert"
	"github.com/zraft/zraft/transport"
)

func TestTLS(t *testing.T) {
	cert, pool := testcert.SelfSigned(t, "zraft test")
	cfg := transport.DefaultRouterConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	srv := newFakeServerConfig(t, cfg)

	c := dialT(t, []string{srv.addr()}, WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}))
	if res, err := c.Submit(context.Background(), []byte("secret stuff")); err != nil || string(res) != "secret stuff" {
		t.Fatalf("Submit over TLS = %q, %v", res, err)
	}

	// A client that does not trust the certificate never gets a session.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, []string{srv.addr()}, testOptions(WithTLS(&tls.Config{MinVersion: tls.VersionTLS13}))...); err == nil {
		t.Fatal("Dial succeeded with an untrusted certificate")
	}
	// Nor does a plaintext client.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := Dial(ctx2, []string{srv.addr()}, testOptions()...); err == nil {
		t.Fatal("plaintext Dial succeeded against a TLS server")
	}
}
