package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/go-zeromq/zmq4"
)

func TestEchoFrameSizes(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	c := dial(t, r.Addr().String(), DefaultDialConfig())
	sizes := []int{0, 1, 255, 256, 300, 8191, 8192, 70000}
	var total uint64
	for i, n := range sizes {
		frame := bytes.Repeat([]byte{byte(i + 1)}, n)
		if err := c.Send(frame); err != nil {
			t.Fatalf("Send(%d bytes): %v", n, err)
		}
		total += uint64(n)
	}
	for i, n := range sizes {
		got := recv(t, c)
		if want := bytes.Repeat([]byte{byte(i + 1)}, n); !bytes.Equal(got, want) {
			t.Fatalf("frame %d: got %d bytes, want %d bytes of %d", i, len(got), n, i+1)
		}
	}
	st := r.Stats()
	if st.MsgsIn != uint64(len(sizes)) || st.BytesIn != total {
		t.Fatalf("stats in = %d msgs %d bytes, want %d %d", st.MsgsIn, st.BytesIn, len(sizes), total)
	}
	waitFor(t, "MsgsOut", func() bool { return r.Stats().MsgsOut == uint64(len(sizes)) })
	if st := c.Stats(); st.MsgsIn != uint64(len(sizes)) || st.BytesIn != total {
		t.Fatalf("client stats = %+v", st)
	}
	if st.Active != 1 || st.Accepted != 1 {
		t.Fatalf("Active=%d Accepted=%d, want 1 1", st.Active, st.Accepted)
	}
}

// Defect 1: zmq4 allocates whatever length a frame header announces. Our
// guard must drop such a peer before allocating, during and after the
// handshake, while other clients keep working.
func TestHugeFrameHeaderDropsOnlyThatPeer(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	good := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, good, "before")

	huge := []byte{flagLong, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}

	// After the handshake: a data frame announcing ~9 EB.
	p := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "")
	waitFor(t, "attacker opened", func() bool { return len(h.openedIDs()) == 2 })
	if _, err := p.nc.Write(huge); err != nil {
		t.Fatalf("write: %v", err)
	}
	waitClosedByServer(t, p.nc)
	attacker := h.openedIDs()[1]
	waitFor(t, "Closed for attacker", func() bool { return len(h.closedErrs(attacker)) == 1 })
	if err := h.closedErrs(attacker)[0]; !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Closed err = %v, want ErrFrameTooLarge", err)
	}

	// In the handshake: the same header as a command in place of READY.
	nc, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cmd := append([]byte(nil), huge...)
	cmd[0] |= flagCommand
	if _, err := nc.Write(append(greeting(), cmd...)); err != nil {
		t.Fatalf("write: %v", err)
	}
	waitClosedByServer(t, nc)
	waitFor(t, "handshake failure counted", func() bool { return r.Stats().HandshakeFailures == 1 })

	if st := r.Stats(); st.OversizedFrames != 2 {
		t.Fatalf("OversizedFrames = %d, want 2", st.OversizedFrames)
	}
	roundTrip(t, good, "after")
	fresh := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, fresh, "fresh")
}

// A frame one byte over the limit is refused; one at the limit is accepted.
func TestMaxFrameSizeBoundary(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.MaxFrameSize = 1024
	h := newRecorder(true)
	r := listen(t, cfg, h)
	dcfg := DefaultDialConfig()
	dcfg.MaxFrameSize = 1024
	c := dial(t, r.Addr().String(), dcfg)
	roundTrip(t, c, strings.Repeat("x", 1024))
	if err := c.Send(make([]byte, 1025)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("client Send(1025) = %v, want ErrFrameTooLarge", err)
	}
	id := h.openedIDs()[0]
	if err := r.Send(id, make([]byte, 1025)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("router Send(1025) = %v, want ErrFrameTooLarge", err)
	}
	roundTrip(t, c, "still open")

	p := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "")
	var hdr [9]byte
	hdr[0] = flagLong
	binary.BigEndian.PutUint64(hdr[1:], 1025)
	if _, err := p.nc.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	waitClosedByServer(t, p.nc)
	waitFor(t, "oversized counted", func() bool { return r.Stats().OversizedFrames == 1 })
}

// Defect 2: zmq4 handshakes inline in its accept loop without a deadline.
// Here a silent TCP peer sits in its handshake (with a long timeout) while a
// new client connects and completes its own.
func TestSilentPeerDoesNotBlockOthers(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.HandshakeTimeout = 10 * waitLimit
	h := newRecorder(true)
	r := listen(t, cfg, h)
	silent, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitFor(t, "silent peer handshaking", func() bool { return r.Stats().Handshaking == 1 })

	dcfg := DefaultDialConfig()
	dcfg.Timeout = waitLimit // well under HandshakeTimeout
	c := dial(t, r.Addr().String(), dcfg)
	roundTrip(t, c, "hello")
	if st := r.Stats(); st.Handshaking != 1 || st.Active != 1 {
		t.Fatalf("Handshaking=%d Active=%d, want 1 and 1 (silent peer still connected)", st.Handshaking, st.Active)
	}
	// Close must abort the pending handshake rather than wait for its
	// timeout; goleak in TestMain checks that nothing is left behind.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosedByServer(t, silent)
}

func TestHandshakeTimeout(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.HandshakeTimeout = 100e6 // 100 ms
	h := newRecorder(true)
	r := listen(t, cfg, h)
	silent, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitClosedByServer(t, silent)
	waitFor(t, "timeout counted", func() bool { return r.Stats().HandshakeTimeouts == 1 })
	if st := r.Stats(); st.HandshakeFailures != 0 || st.Handshaking != 0 {
		t.Fatalf("stats = %+v", st)
	}
	if len(h.openedIDs()) != 0 {
		t.Fatal("Opened called for a connection that never completed its handshake")
	}
}

// Defect 3: with zmq4 a second peer declaring an existing identity receives
// the first peer's replies. Here routing is by ConnID only.
func TestDuplicateIdentityCannotCrossDeliver(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	a := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "same-identity")
	b := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "same-identity")
	waitFor(t, "both opened", func() bool { return len(h.openedIDs()) == 2 })

	const n = 20
	for i := range n {
		a.send(t, fmt.Sprintf("a-%d", i))
	}
	b.send(t, "b-only")
	// b's first message back must be its own echo: with zmq4's ROUTER it
	// would have been a copy of a's replies.
	if msg := b.recv(t); len(msg.Frames) != 1 || string(msg.Frames[0]) != "b-only" {
		t.Fatalf("b received %q, want only its own echo", msg.Frames)
	}
	for i := range n {
		if msg := a.recv(t); string(msg.Frames[0]) != fmt.Sprintf("a-%d", i) {
			t.Fatalf("a received %q, want a-%d", msg.Frames, i)
		}
	}
	ids := h.openedIDs()
	if ids[0] == ids[1] {
		t.Fatalf("both peers got ConnID %d", ids[0])
	}
	for _, id := range ids {
		frames := h.receivedFrames(id)
		prefix := string(frames[0][:2])
		for _, f := range frames {
			if !strings.HasPrefix(string(f), prefix) {
				t.Fatalf("conn %d received %q mixed with %q: messages attributed to the wrong peer", id, f, prefix)
			}
		}
	}
	// After everything, b has nothing else waiting: a sentinel round trip
	// comes back first.
	b.send(t, "b-sentinel")
	if msg := b.recv(t); string(msg.Frames[0]) != "b-sentinel" {
		t.Fatalf("b received %q after its sentinel", msg.Frames)
	}
}

// Defect 4: with zmq4 one client that stops reading stalls replies to all.
// Here it fills only its own queue, gets disconnected, and another client's
// request/reply keeps flowing throughout.
func TestNonReadingClientIsolated(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.SendQueue = 64
	h := newRecorder(true)
	r := listen(t, cfg, h)
	good := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, good, "warm-up")
	newRawPeer(t, r.Addr().String(), zmq4.Dealer, "") // never reads
	waitFor(t, "stalled opened", func() bool { return len(h.openedIDs()) == 2 })
	stalledID := h.openedIDs()[1]

	frame := make([]byte, 64<<10)
	full, accepted := false, 0
	// Loopback buffers hold a few MiB, so at 64 KiB a frame this ends after
	// at most a few hundred sends; the bound only keeps a bug from looping.
	for i := 0; i < 100000 && !full; i++ {
		err := r.Send(stalledID, frame)
		switch {
		case errors.Is(err, ErrQueueFull):
			full = true
		case err != nil:
			t.Fatalf("Send to stalled peer: %v", err)
		default:
			accepted++
		}
		// One round trip per send paces the sends, so the queue fills
		// only once the writer is stuck on the stalled socket.
		roundTrip(t, good, fmt.Sprintf("during-%d", i))
	}
	if !full {
		t.Fatal("queue never filled")
	}
	if accepted <= cfg.SendQueue {
		t.Fatalf("queue filled after %d sends: the writer never moved data, so this did not test a stalled peer", accepted)
	}
	waitFor(t, "stalled peer closed", func() bool { return len(h.closedErrs(stalledID)) == 1 })
	if err := h.closedErrs(stalledID)[0]; !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Closed err = %v, want ErrQueueFull", err)
	}
	if err := r.Send(stalledID, []byte("x")); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("Send after close = %v, want ErrUnknownConn", err)
	}
	if st := r.Stats(); st.QueueFullCloses != 1 {
		t.Fatalf("QueueFullCloses = %d, want 1", st.QueueFullCloses)
	}
	roundTrip(t, good, "after")
}

func TestMultipartDroppedConnectionKept(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	p := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "")
	p.send(t, "part-1", "part-2", "part-3")
	p.send(t, "single")
	if msg := p.recv(t); len(msg.Frames) != 1 || string(msg.Frames[0]) != "single" {
		t.Fatalf("got %q, want the single-frame echo only", msg.Frames)
	}
	id := h.openedIDs()[0]
	if frames := h.receivedFrames(id); len(frames) != 1 {
		t.Fatalf("handler received %q, want only \"single\"", frames)
	}
	if st := r.Stats(); st.MultipartDropped != 1 {
		t.Fatalf("MultipartDropped = %d, want 1", st.MultipartDropped)
	}
}

// ZMTP commands are handled by the transport and never reach the Handler:
// PING gets a PONG carrying its context.
func TestCommandsNotDelivered(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	p := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "")
	if err := p.zc.SendCmd(zmq4.CmdPing, []byte{0, 10, 'c', 't', 'x'}); err != nil {
		t.Fatal(err)
	}
	if err := p.zc.SendCmd(zmq4.CmdSubscribe, []byte("ignored")); err != nil {
		t.Fatal(err)
	}
	cmd, err := p.zc.RecvCmd()
	if err != nil {
		t.Fatalf("RecvCmd: %v", err)
	}
	if cmd.Name != zmq4.CmdPong || string(cmd.Body) != "ctx" {
		t.Fatalf("got %s %q, want PONG \"ctx\"", cmd.Name, cmd.Body)
	}
	p.send(t, "data")
	if msg := p.recv(t); string(msg.Frames[0]) != "data" {
		t.Fatalf("got %q", msg.Frames)
	}
	if frames := h.receivedFrames(h.openedIDs()[0]); len(frames) != 1 {
		t.Fatalf("handler received %q, want only the data frame", frames)
	}
}

func TestProtocolViolationsClose(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"reserved flag bits", []byte{0x80, 0}},
		{"malformed command", []byte{flagCommand, 1, 9}},
		{"command inside multipart", []byte{flagMore, 1, 'a', flagCommand, 5, 4, 'P', 'I', 'N', 'G'}},
		{"ERROR command", append([]byte{flagCommand, 9, 5}, "ERRORbad"...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newRecorder(true)
			r := listen(t, smallRouterConfig(), h)
			p := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "")
			waitFor(t, "opened", func() bool { return len(h.openedIDs()) == 1 })
			if _, err := p.nc.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			waitClosedByServer(t, p.nc)
			id := h.openedIDs()[0]
			waitFor(t, "Closed", func() bool { return len(h.closedErrs(id)) == 1 })
			if err := h.closedErrs(id)[0]; !errors.Is(err, ErrProtocol) {
				t.Fatalf("Closed err = %v, want ErrProtocol", err)
			}
			if r.Stats().ProtocolErrors != 1 {
				t.Fatalf("ProtocolErrors = %d", r.Stats().ProtocolErrors)
			}
		})
	}
}

// zmq4's READY metadata decoder indexes without bounds checks; a truncated
// property panics inside zmq4.Open. The Router must count a failed
// handshake and keep serving.
func TestMalformedReadyDoesNotCrash(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	nc, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ready := append([]byte{5}, "READY"...)
	ready = append(ready, 1, 'a') // key "a", then no 4-byte value length
	msg := append(greeting(), flagCommand, byte(len(ready)))
	msg = append(msg, ready...)
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	waitClosedByServer(t, nc)
	waitFor(t, "failure counted", func() bool { return r.Stats().HandshakeFailures == 1 })
	c := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, c, "alive")
}

func TestDataFrameDuringHandshakeRejected(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	nc, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(append(greeting(), 0, 3, 'a', 'b', 'c')); err != nil {
		t.Fatal(err)
	}
	waitClosedByServer(t, nc)
	waitFor(t, "failure counted", func() bool { return r.Stats().HandshakeFailures == 1 })
}

func TestMaxConns(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.MaxConns = 2
	cfg.MaxHandshakes = 2
	h := newRecorder(true)
	r := listen(t, cfg, h)
	a := dial(t, r.Addr().String(), DefaultDialConfig())
	dial(t, r.Addr().String(), DefaultDialConfig())
	if _, err := Dial(context.Background(), r.Addr().String(), DefaultDialConfig()); !errors.Is(err, ErrHandshake) {
		t.Fatalf("third Dial = %v, want ErrHandshake", err)
	}
	waitFor(t, "two open", func() bool { return r.Stats().Active == 2 })
	if st := r.Stats(); st.RejectedConns != 1 {
		t.Fatalf("RejectedConns=%d, want 1", st.RejectedConns)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "slot freed", func() bool { return r.Stats().Active == 1 })
	c := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, c, "third")
}

func TestMaxHandshakes(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.MaxHandshakes = 1
	h := newRecorder(true)
	r := listen(t, cfg, h)
	silent, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "silent peer handshaking", func() bool { return r.Stats().Handshaking == 1 })
	if _, err := Dial(context.Background(), r.Addr().String(), DefaultDialConfig()); !errors.Is(err, ErrHandshake) {
		t.Fatalf("Dial = %v, want ErrHandshake", err)
	}
	if st := r.Stats(); st.RejectedHandshakes != 1 {
		t.Fatalf("RejectedHandshakes = %d, want 1", st.RejectedHandshakes)
	}
	_ = silent.Close()
	waitFor(t, "slot freed", func() bool { return r.Stats().Handshaking == 0 })
	c := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, c, "ok")
}

// Close returns only after every connection's Closed has run, exactly once
// per Opened, and the Router is unusable afterwards.
func TestCloseClosesEverything(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	var conns []*Conn
	for i := range 5 {
		c := dial(t, r.Addr().String(), DefaultDialConfig())
		roundTrip(t, c, fmt.Sprint(i))
		conns = append(conns, c)
	}
	silent, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitFor(t, "silent handshaking", func() bool { return r.Stats().Handshaking == 1 })
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ids := h.openedIDs()
	if len(ids) != 5 || h.numClosed() != 5 {
		t.Fatalf("opened %d, closed %d, want 5 and 5", len(ids), h.numClosed())
	}
	for _, id := range ids {
		if errs := h.closedErrs(id); len(errs) != 1 || errs[0] != nil {
			t.Fatalf("conn %d Closed calls = %v, want one with nil", id, errs)
		}
		if err := r.Send(id, []byte("x")); !errors.Is(err, ErrUnknownConn) {
			t.Fatalf("Send after Close = %v", err)
		}
	}
	for _, c := range conns {
		if _, err := c.Recv(); !errors.Is(err, ErrClosed) {
			t.Fatalf("client Recv after server Close = %v, want ErrClosed", err)
		}
	}
	if st := r.Stats(); st.Active != 0 || st.Handshaking != 0 || st.HandshakeFailures != 0 || st.HandshakeTimeouts != 0 {
		t.Fatalf("stats after Close = %+v", st)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := Dial(context.Background(), r.Addr().String(), DefaultDialConfig()); err == nil {
		t.Fatal("Dial to a closed Router succeeded")
	}
}

// CloseConn writes what was queued before it, then closes.
func TestCloseConnFlushesQueued(t *testing.T) {
	h := newRecorder(false)
	h.onReceived = func(r *Router, id ConnID, frame []byte) {
		for i := range 100 {
			_ = r.Send(id, []byte(fmt.Sprintf("%s-%d", frame, i)))
		}
		_ = r.CloseConn(id)
	}
	r := listen(t, smallRouterConfig(), h)
	c := dial(t, r.Addr().String(), DefaultDialConfig())
	if err := c.Send([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if got := recv(t, c); string(got) != fmt.Sprintf("bye-%d", i) {
			t.Fatalf("got %q, want bye-%d", got, i)
		}
	}
	if _, err := c.Recv(); !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseConn = %v, want ErrClosed wrapping io.EOF", err)
	}
	id := h.openedIDs()[0]
	waitFor(t, "Closed", func() bool { return len(h.closedErrs(id)) == 1 })
	if err := h.closedErrs(id)[0]; err != nil {
		t.Fatalf("Closed err = %v, want nil for a local close", err)
	}
	if err := r.CloseConn(id); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("second CloseConn = %v, want ErrUnknownConn", err)
	}
}

func TestHandlerPanicClosesOnlyThatConn(t *testing.T) {
	h := newRecorder(false)
	h.onReceived = func(r *Router, id ConnID, frame []byte) {
		if string(frame) == "boom" {
			panic("handler bug")
		}
		_ = r.Send(id, frame)
	}
	r := listen(t, smallRouterConfig(), h)
	good := dial(t, r.Addr().String(), DefaultDialConfig())
	bad := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, good, "x")
	roundTrip(t, bad, "y")
	if err := bad.Send([]byte("boom")); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv = %v, want ErrClosed", err)
	}
	// Opened order between the two clients is not fixed; find bad's id by
	// what it sent.
	var badID ConnID
	for _, id := range h.openedIDs() {
		if string(h.receivedFrames(id)[0]) == "y" {
			badID = id
		}
	}
	waitFor(t, "Closed", func() bool { return len(h.closedErrs(badID)) == 1 })
	if err := h.closedErrs(badID)[0]; !errors.Is(err, ErrHandlerPanic) {
		t.Fatalf("Closed err = %v, want ErrHandlerPanic", err)
	}
	roundTrip(t, good, "still fine")
}

func TestUnknownConn(t *testing.T) {
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	if err := r.Send(12345, []byte("x")); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("Send = %v", err)
	}
	if err := r.CloseConn(12345); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("CloseConn = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultRouterConfig().Validate(); err != nil {
		t.Fatalf("default router config: %v", err)
	}
	if err := DefaultDialConfig().Validate(); err != nil {
		t.Fatalf("default dial config: %v", err)
	}
	bad := []func(*RouterConfig){
		func(c *RouterConfig) { c.Addr = "" },
		func(c *RouterConfig) { c.MaxFrameSize = 100 },
		func(c *RouterConfig) { c.MaxFrameSize = 2 << 30 },
		func(c *RouterConfig) { c.MaxConns = 0 },
		func(c *RouterConfig) { c.MaxHandshakes = 0 },
		func(c *RouterConfig) { c.MaxHandshakes = c.MaxConns + 1 },
		func(c *RouterConfig) { c.HandshakeTimeout = 0 },
		func(c *RouterConfig) { c.SendQueue = 0 },
		func(c *RouterConfig) { c.Linger = -1 },
	}
	for i, mut := range bad {
		cfg := DefaultRouterConfig()
		mut(&cfg)
		if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("router case %d: Validate = %v, want ErrInvalidConfig", i, err)
		}
		if _, err := Listen(cfg, newRecorder(false)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("router case %d: Listen = %v, want ErrInvalidConfig", i, err)
		}
	}
	if _, err := Listen(DefaultRouterConfig(), nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Listen(nil handler) = %v", err)
	}
	badDial := []func(*DialConfig){
		func(c *DialConfig) { c.MaxFrameSize = 0 },
		func(c *DialConfig) { c.Timeout = 0 },
		func(c *DialConfig) { c.SendQueue = 1<<20 + 1 },
		func(c *DialConfig) { c.Linger = -1 },
	}
	for i, mut := range badDial {
		cfg := DefaultDialConfig()
		mut(&cfg)
		if _, err := Dial(context.Background(), "127.0.0.1:1", cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("dial case %d: Dial = %v, want ErrInvalidConfig", i, err)
		}
	}
}
