package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// fakeServer accepts one connection, completes the ZMTP handshake as a
// ROUTER through zmq4 and hands the raw socket to fn.
func fakeServer(t *testing.T, fn func(nc net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(waitLimit))
		if _, err := zmq4.Open(nc, null.Security(), zmq4.Router, nil, true, nil); err != nil {
			return
		}
		fn(nc)
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// The client has the same guard: a server announcing a huge frame kills
// only the connection, with a clear error, before anything is allocated.
func TestClientRejectsHugeFrame(t *testing.T) {
	addr := fakeServer(t, func(nc net.Conn) {
		_, _ = nc.Write([]byte{flagLong, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})
		_, _ = io.Copy(io.Discard, nc)
	})
	c := dial(t, addr, DefaultDialConfig())
	_, err := c.Recv()
	if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Recv = %v, want ErrClosed wrapping ErrFrameTooLarge", err)
	}
	if err := c.Send([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send on dead conn = %v, want ErrClosed", err)
	}
}

// The client answers PING and drops multi-part messages, delivering only
// single-frame messages.
func TestClientCommandsAndMultipart(t *testing.T) {
	pong := make(chan []byte, 1)
	addr := fakeServer(t, func(nc net.Conn) {
		bw := bufio.NewWriter(nc)
		_ = writeCommand(bw, cmdPing, []byte{0, 0, 'h', 'i'})
		_ = writeFrame(bw, flagMore, []byte("p1"))
		_ = writeFrame(bw, 0, []byte("p2"))
		_ = writeFrame(bw, 0, []byte("single"))
		_ = bw.Flush()
		body, kind, err := readMessage(bufio.NewReader(nc), 1024, nil)
		if err == nil && kind == kindCommand {
			pong <- body
		}
	})
	c := dial(t, addr, DefaultDialConfig())
	if got := recv(t, c); string(got) != "single" {
		t.Fatalf("Recv = %q, want \"single\"", got)
	}
	select {
	case body := <-pong:
		name, data, err := parseCommand(body)
		if err != nil || name != cmdPong || string(data) != "hi" {
			t.Fatalf("got %q %q %v, want PONG \"hi\"", name, data, err)
		}
	case <-time.After(waitLimit):
		t.Fatal("no PONG")
	}
	if st := c.Stats(); st.MultipartDropped != 1 || st.MsgsIn != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// Reconnect policy belongs to the caller: a dead Conn says so clearly, and a
// new Dial to a new Router on the same address works.
func TestServerGoneThenRedial(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	addr := r.Addr().String()
	c := dial(t, addr, DefaultDialConfig())
	roundTrip(t, c, "one")

	errc := make(chan error, 1)
	go func() {
		_, err := c.Recv()
		errc <- err
	}()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
			t.Fatalf("Recv = %v, want ErrClosed wrapping io.EOF", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Recv did not return after the server closed")
	}
	if err := c.Send([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send = %v, want ErrClosed", err)
	}

	cfg := smallRouterConfig()
	cfg.Addr = addr
	h2 := newRecorder(true)
	r2, err := Listen(cfg, h2)
	if err != nil {
		t.Fatalf("Listen on the same address: %v", err)
	}
	h2.router.Store(r2)
	defer r2.Close()
	c2 := dial(t, addr, DefaultDialConfig())
	roundTrip(t, c2, "two")
}

func TestDialErrors(t *testing.T) {
	// Nothing listens on a port we just released.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if _, err := Dial(context.Background(), addr, DefaultDialConfig()); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}

	// A server that accepts but never answers: the Dial timeout applies.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cfg := DefaultDialConfig()
	cfg.Timeout = 50 * time.Millisecond
	_, err = Dial(context.Background(), "tcp://"+silent.Addr().String(), cfg)
	if !errors.Is(err, ErrHandshake) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v, want ErrHandshake and DeadlineExceeded", err)
	}

	// Cancellation of the caller's context aborts the handshake too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = Dial(ctx, silent.Addr().String(), DefaultDialConfig())
	if !errors.Is(err, ErrHandshake) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want ErrHandshake and Canceled", err)
	}
}

// A client Send never blocks: with a server that stopped reading, the queue
// fills and Send says so, keeping the connection.
func TestClientQueueFull(t *testing.T) {
	release := make(chan struct{})
	addr := fakeServer(t, func(nc net.Conn) {
		<-release
	})
	cfg := DefaultDialConfig()
	cfg.SendQueue = 4
	cfg.Linger = 0
	c := dial(t, addr, cfg)
	defer close(release)
	frame := make([]byte, 64<<10)
	full := false
	for i := 0; i < 100000 && !full; i++ {
		switch err := c.Send(frame); {
		case errors.Is(err, ErrQueueFull):
			full = true
		case err != nil:
			t.Fatalf("Send: %v", err)
		}
	}
	if !full {
		t.Fatal("queue never filled")
	}
	if c.closing() {
		t.Fatal("client connection closed on a full queue")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Send([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close = %v, want ErrClosed", err)
	}
}

// Close unblocks a pending Recv.
func TestCloseUnblocksRecv(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	c := dial(t, r.Addr().String(), DefaultDialConfig())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Recv()
		errc <- err
	}()
	roundTripNone := c.Send(nil) // an empty frame echoes back as empty
	if roundTripNone != nil {
		t.Fatal(roundTripNone)
	}
	if err := <-errc; err != nil {
		t.Fatalf("first Recv: %v", err)
	}
	go func() {
		_, err := c.Recv()
		errc <- err
	}()
	_ = c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv = %v, want ErrClosed", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Recv still blocked after Close")
	}
	if c.RemoteAddr().String() != r.Addr().String() {
		t.Fatalf("RemoteAddr = %v, want %v", c.RemoteAddr(), r.Addr())
	}
}
