package transport

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
	"go.uber.org/goleak"
)

// testPoller is RouterConfig.Poller for the Routers the tests start
// (listen, smallRouterConfig). TestMain runs every test with the poller and
// then, where the poller is supported, again with the goroutine reader, so
// that both reading paths pass the same tests.
var testPoller = true

func TestMain(m *testing.M) {
	code := m.Run()
	bench := flag.Lookup("test.bench")
	if code == 0 && pollerSupported && os.Getenv(idleClientsEnv) == "" && (bench == nil || bench.Value.String() == "") {
		fmt.Println("=== transport tests again with RouterConfig.Poller = false (a reader goroutine per connection)")
		testPoller = false
		code = m.Run()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// mode names the reading path the tests run with, for messages.
func mode() string {
	if testPoller && pollerSupported {
		return "poller"
	}
	return "goroutine reader"
}

// waitLimit bounds every wait in the tests; it is generous because the
// machine is shared, and it is never what a test asserts.
const waitLimit = 20 * time.Second

// waitFor polls cond until it holds or waitLimit passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recorder is a Handler that records every event and, when echo is set,
// sends each frame back to the connection it came from.
type recorder struct {
	router atomic.Pointer[Router]
	echo   bool
	// onReceived, when set, runs for every frame instead of the echo.
	onReceived func(r *Router, id ConnID, frame []byte)

	mu       sync.Mutex
	opened   []ConnID
	closed   map[ConnID][]error
	received map[ConnID][][]byte
}

func newRecorder(echo bool) *recorder {
	return &recorder{echo: echo, closed: map[ConnID][]error{}, received: map[ConnID][][]byte{}}
}

func (h *recorder) Opened(id ConnID, _ net.Addr) {
	h.mu.Lock()
	h.opened = append(h.opened, id)
	h.mu.Unlock()
}

func (h *recorder) Received(id ConnID, frame []byte) {
	h.mu.Lock()
	h.received[id] = append(h.received[id], frame)
	h.mu.Unlock()
	r := h.router.Load()
	switch {
	case h.onReceived != nil:
		h.onReceived(r, id, frame)
	case h.echo && r != nil:
		_ = r.Send(id, frame)
	}
}

func (h *recorder) Closed(id ConnID, err error) {
	h.mu.Lock()
	h.closed[id] = append(h.closed[id], err)
	h.mu.Unlock()
}

func (h *recorder) openedIDs() []ConnID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]ConnID(nil), h.opened...)
}

func (h *recorder) closedErrs(id ConnID) []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.closed[id]...)
}

func (h *recorder) receivedFrames(id ConnID) [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.received[id]...)
}

func (h *recorder) numClosed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.closed)
}

// listen starts a Router on 127.0.0.1 with an OS-chosen port.
func listen(t *testing.T, cfg RouterConfig, h *recorder) *Router {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Poller = testPoller
	r, err := Listen(cfg, h)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	h.router.Store(r)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func dial(t *testing.T, addr string, cfg DialConfig) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), addr, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawPeer is a peer built directly on zmq4's connection layer, so a test can
// choose its routing identity, send multi-part messages and commands, or
// write raw bytes after the handshake.
type rawPeer struct {
	nc net.Conn
	zc *zmq4.Conn
}

func newRawPeer(t *testing.T, addr string, typ zmq4.SocketType, id string) *rawPeer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitLimit))
	zc, err := zmq4.Open(nc, null.Security(), typ, zmq4.SocketIdentity(id), false, nil)
	if err != nil {
		t.Fatalf("zmq4 handshake: %v", err)
	}
	return &rawPeer{nc: nc, zc: zc}
}

func (p *rawPeer) send(t *testing.T, frames ...string) {
	t.Helper()
	var bs [][]byte
	for _, f := range frames {
		bs = append(bs, []byte(f))
	}
	if err := p.zc.SendMsg(zmq4.NewMsgFrom(bs...)); err != nil {
		t.Fatalf("raw send: %v", err)
	}
}

func (p *rawPeer) recv(t *testing.T) zmq4.Msg {
	t.Helper()
	msg, err := p.zc.RecvMsg()
	if err != nil {
		t.Fatalf("raw recv: %v", err)
	}
	return msg
}

// waitClosedByServer reads from nc until the server closes it.
func waitClosedByServer(t *testing.T, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			if os.IsTimeout(err) {
				t.Fatalf("server did not close the connection")
			}
			return
		}
	}
}

// roundTrip sends frame on c and expects the echo.
func roundTrip(t *testing.T, c *Conn, frame string) {
	t.Helper()
	if err := c.Send([]byte(frame)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := recv(t, c)
	if string(got) != frame {
		t.Fatalf("echo = %q, want %q", got, frame)
	}
}

// greeting returns a valid ZMTP 3.0 NULL greeting as a peer would send it.
func greeting() []byte {
	g := make([]byte, greetingLen)
	g[0], g[9], g[10], g[11] = 0xFF, 0x7F, 3, 0
	copy(g[12:], "NULL")
	return g
}

func smallRouterConfig() RouterConfig {
	cfg := DefaultRouterConfig()
	cfg.HandshakeTimeout = waitLimit
	cfg.Poller = testPoller
	return cfg
}

// recv calls c.Recv, closing c if nothing arrives within waitLimit so a
// broken test fails instead of hanging.
func recv(t *testing.T, c *Conn) []byte {
	t.Helper()
	timer := time.AfterFunc(waitLimit, func() { _ = c.Close() })
	defer timer.Stop()
	got, err := c.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return got
}
