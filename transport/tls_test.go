package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"

	"github.com/zraft/zraft/internal/testcert"
)

func TestTLSRoundTrip(t *testing.T) {
	cert, pool := testcert.SelfSigned(t, "server")
	cfg := smallRouterConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	h := newRecorder(true)
	r := listen(t, cfg, h)

	dcfg := DefaultDialConfig()
	dcfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	c := dial(t, r.Addr().String(), dcfg)
	roundTrip(t, c, "over tls")
	big := make([]byte, 100000)
	for i := range big {
		big[i] = byte(i)
	}
	roundTrip(t, c, string(big))

	// A plain ZMTP client against the TLS server fails its handshake
	// cleanly and is counted.
	if _, err := Dial(context.Background(), r.Addr().String(), DefaultDialConfig()); !errors.Is(err, ErrHandshake) {
		t.Fatalf("plain Dial to TLS server = %v, want ErrHandshake", err)
	}
	waitFor(t, "server counts the failure", func() bool { return r.Stats().HandshakeFailures == 1 })

	// A client that does not trust the server's certificate fails too.
	_, other := testcert.SelfSigned(t, "other")
	dcfg.TLS = &tls.Config{RootCAs: other}
	if _, err := Dial(context.Background(), r.Addr().String(), dcfg); !errors.Is(err, ErrHandshake) {
		t.Fatalf("Dial with wrong roots = %v, want ErrHandshake", err)
	}
	roundTrip(t, c, "first client unaffected")
}

func TestTLSClientCertificates(t *testing.T) {
	serverCert, serverPool := testcert.SelfSigned(t, "server")
	clientCert, clientPool := testcert.SelfSigned(t, "client")
	cfg := smallRouterConfig()
	cfg.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientPool,
	}
	h := newRecorder(true)
	r := listen(t, cfg, h)

	dcfg := DefaultDialConfig()
	dcfg.TLS = &tls.Config{RootCAs: serverPool, Certificates: []tls.Certificate{clientCert}}
	c := dial(t, r.Addr().String(), dcfg)
	roundTrip(t, c, "mutual")

	// Without a client certificate the server refuses. With TLS 1.3 the
	// client learns it on its first read, which the ZMTP handshake makes.
	dcfg.TLS = &tls.Config{RootCAs: serverPool}
	if _, err := Dial(context.Background(), r.Addr().String(), dcfg); !errors.Is(err, ErrHandshake) {
		t.Fatalf("Dial without client cert = %v, want ErrHandshake", err)
	}
	waitFor(t, "server counts the failure", func() bool { return r.Stats().HandshakeFailures == 1 })
}

func TestTLSConfigWithoutCertificateInvalid(t *testing.T) {
	cfg := DefaultRouterConfig()
	cfg.TLS = &tls.Config{}
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
	}
}

// A graceful CloseConn over TLS still writes what was queued.
func TestTLSCloseConnFlushes(t *testing.T) {
	cert, pool := testcert.SelfSigned(t, "server")
	cfg := smallRouterConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	h := newRecorder(false)
	h.onReceived = func(r *Router, id ConnID, frame []byte) {
		for range 10 {
			_ = r.Send(id, frame)
		}
		_ = r.CloseConn(id)
	}
	r := listen(t, cfg, h)
	dcfg := DefaultDialConfig()
	dcfg.TLS = &tls.Config{RootCAs: pool}
	c := dial(t, r.Addr().String(), dcfg)
	if err := c.Send([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if got := recv(t, c); string(got) != "bye" {
			t.Fatalf("got %q", got)
		}
	}
	if _, err := c.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv = %v, want ErrClosed", err)
	}
}
