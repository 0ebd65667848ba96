package transport

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/zraft/zraft/internal/testcert"
)

// The poller is used exactly where documented: when switched on, on a
// supported system, never with TLS; not by default.
func TestReaderModeSelection(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.Poller = true
	r, err := Listen(cfg, newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Polled() != pollerSupported {
		t.Errorf("Poller on: Polled() = %v, want %v", r.Polled(), pollerSupported)
	}
	if DefaultRouterConfig().Poller {
		t.Errorf("DefaultRouterConfig().Poller = true, want false until the chaos failure is understood")
	}

	cfg.Poller = false
	r2, err := Listen(cfg, newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if r2.Polled() {
		t.Errorf("Poller off: Polled() = true")
	}

	cert, _ := testcert.SelfSigned(t, "server")
	cfg.Poller = true
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	r3, err := Listen(cfg, newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	if r3.Polled() {
		t.Errorf("TLS: Polled() = true, want the goroutine reader")
	}
}

// splitStream is the byte stream of the split tests after the handshake: a
// short frame, a PING, a long-header frame, a multi-part message (dropped)
// and a last short frame. Delivered: three data frames; answered: one PONG.
func splitStream(t *testing.T) (stream []byte, want []string) {
	t.Helper()
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	long := strings.Repeat("L", 300)
	_ = writeFrame(w, 0, []byte("first"))
	_ = writeCommand(w, cmdPing, []byte{0, 10, 'c', 't', 'x'})
	_ = writeFrame(w, 0, []byte(long))
	_ = writeFrame(w, flagMore, []byte("part1"))
	_ = writeFrame(w, 0, []byte("part2"))
	if err := writeFrame(w, 0, []byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), []string{"first", long, "last"}
}

// expectSplit waits until the Handler has received want on id after the
// first `before` frames, and the PONG for the PING has arrived.
func expectSplit(t *testing.T, h *recorder, p *rawPeer, id ConnID, before int, want []string) {
	t.Helper()
	cmd, err := p.zc.RecvCmd()
	if err != nil {
		t.Fatalf("%s: RecvCmd: %v", mode(), err)
	}
	if cmd.Name != zmq4.CmdPong || string(cmd.Body) != "ctx" {
		t.Fatalf("%s: got %s %q, want PONG \"ctx\"", mode(), cmd.Name, cmd.Body)
	}
	waitFor(t, "frames delivered", func() bool { return len(h.receivedFrames(id)) >= before+len(want) })
	got := h.receivedFrames(id)[before:]
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames delivered, want %d", mode(), len(got), len(want))
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("%s: frame %d = %.20q (%d bytes), want %.20q (%d bytes)", mode(), i, got[i], len(got[i]), want[i], len(want[i]))
		}
	}
}

// Frames that arrive in pieces are reassembled and delivered intact and in
// order, whatever the boundary: the stream is sent split in two at every
// byte position, then one byte at a time, with pauses between the pieces
// (so with the poller the connection is parked and woken mid-frame).
func TestFramesSplitAtEveryByteBoundary(t *testing.T) {
	h := newRecorder(false)
	r := listen(t, smallRouterConfig(), h)
	p := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "")
	waitFor(t, "opened", func() bool { return len(h.openedIDs()) == 1 })
	id := h.openedIDs()[0]
	stream, want := splitStream(t)
	_ = p.nc.SetDeadline(time.Now().Add(2 * waitLimit))

	delivered := 0
	for k := 1; k < len(stream); k++ {
		if _, err := p.nc.Write(stream[:k]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		if _, err := p.nc.Write(stream[k:]); err != nil {
			t.Fatal(err)
		}
		expectSplit(t, h, p, id, delivered, want)
		delivered += len(want)
	}
	for i := range stream {
		if _, err := p.nc.Write(stream[i : i+1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	expectSplit(t, h, p, id, delivered, want)

	st := r.Stats()
	if st.MultipartDropped != uint64(len(stream)) {
		t.Errorf("%s: MultipartDropped = %d, want %d", mode(), st.MultipartDropped, len(stream))
	}
	if n := h.numClosed(); n != 0 {
		t.Errorf("%s: %d connections closed, want 0", mode(), n)
	}
}

// orderChecker is a Handler that checks the Handler contract on every
// connection: Opened first, then Received frames "client:seq" of one client
// with seq counting up from 0, then exactly one Closed.
type orderChecker struct {
	mu     sync.Mutex
	conns  map[ConnID]*orderState
	errs   []string
	closed int
}

type orderState struct {
	client string
	next   int
	closed bool
	cause  error
}

func (h *orderChecker) fail(format string, args ...any) {
	if len(h.errs) < 10 {
		h.errs = append(h.errs, fmt.Sprintf(format, args...))
	}
}

func (h *orderChecker) Opened(id ConnID, _ net.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns[id] != nil {
		h.fail("conn %d opened twice", id)
	}
	h.conns[id] = &orderState{}
}

func (h *orderChecker) Received(id ConnID, frame []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.conns[id]
	if s == nil || s.closed {
		h.fail("conn %d: frame %q outside Opened..Closed", id, frame)
		return
	}
	client, seqs, _ := strings.Cut(string(frame), ":")
	seq, err := strconv.Atoi(seqs)
	switch {
	case err != nil:
		h.fail("conn %d: malformed frame %q", id, frame)
	case s.client != "" && client != s.client:
		h.fail("conn %d: frame of client %s after client %s", id, client, s.client)
	case seq != s.next:
		h.fail("conn %d: frame %d, want %d", id, seq, s.next)
	}
	s.client = client
	s.next = seq + 1
}

func (h *orderChecker) Closed(id ConnID, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.conns[id]
	if s == nil || s.closed {
		h.fail("conn %d: Closed without Opened or twice", id)
		return
	}
	s.closed, s.cause = true, err
	h.closed++
}

// Many connections sending in bursts with pauses (so with the poller they
// are parked and woken many times, and several are read at once) each have
// their frames delivered in order, and Closed (io.EOF, as the clients hang
// up) after their last frame.
func TestInterleavedConnectionsKeepOrder(t *testing.T) {
	const clients, frames, burst = 40, 200, 10
	h := &orderChecker{conns: map[ConnID]*orderState{}}
	cfg := smallRouterConfig()
	r, err := Listen(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	dcfg := DefaultDialConfig()
	conns := make([]*Conn, clients)
	for i := range conns {
		conns[i] = dial(t, r.Addr().String(), dcfg)
	}
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range frames {
				if err := c.Send([]byte(fmt.Sprintf("%d:%d", i, seq))); err != nil {
					errc <- err
					return
				}
				if seq%burst == burst-1 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("Send: %v", err)
	}
	waitFor(t, "every frame delivered", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := 0
		for _, s := range h.conns {
			n += s.next
		}
		return n == clients*frames
	})
	for _, c := range conns {
		_ = c.Close()
	}
	waitFor(t, "every connection closed", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.closed == clients
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.errs {
		t.Errorf("%s: %s", mode(), e)
	}
	for id, s := range h.conns {
		if s.next != frames || !errors.Is(s.cause, io.EOF) {
			t.Errorf("%s: conn %d: %d frames, closed with %v; want %d and io.EOF", mode(), id, s.next, s.cause, frames)
		}
	}
}

// waitParked waits until connection id is parked in the poller (no reader
// goroutine).
func waitParked(t *testing.T, r *Router, id ConnID) {
	t.Helper()
	waitFor(t, "connection parked", func() bool {
		c := r.lookup(id)
		return c != nil && c.rstate.Load() == readerParked
	})
}

// A parked connection (no reader goroutine) still sees every way a
// connection ends: CloseConn (queued frames flushed first), the peer
// hanging up, a slow-consumer close from Send, and Router.Close; each ends
// with exactly one Closed, and goleak (TestMain) finds no goroutine left.
func TestParkedConnectionCloses(t *testing.T) {
	if !pollerSupported {
		t.Skip("no poller on this system")
	}
	h := newRecorder(true)
	cfg := smallRouterConfig()
	cfg.Poller = true
	cfg.MaxFrameSize = 1 << 10
	cfg.SendQueueBytes = 1 << 10
	r, err := Listen(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	h.router.Store(r)
	defer r.Close()

	open := func() (*Conn, ConnID) {
		c := dial(t, r.Addr().String(), DefaultDialConfig())
		roundTrip(t, c, "hello")
		ids := h.openedIDs() // connections open one at a time here
		id := ids[len(ids)-1]
		waitParked(t, r, id)
		// Woken and parked again, many times: back to back (the reader
		// lingers) and sparse (it parks at once).
		for i := range 20 {
			roundTrip(t, c, "again "+strconv.Itoa(i))
		}
		waitParked(t, r, id)
		for i := range 2 {
			time.Sleep(pollSparse + 10*time.Millisecond)
			roundTrip(t, c, "sparse "+strconv.Itoa(i))
			waitParked(t, r, id)
		}
		return c, id
	}

	// CloseConn: the frame queued just before is still delivered.
	c1, id1 := open()
	if err := r.Send(id1, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := r.CloseConn(id1); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c1); string(got) != "bye" {
		t.Fatalf("got %q, want the frame queued before CloseConn", got)
	}
	if _, err := c1.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseConn = %v, want io.EOF", err)
	}
	waitFor(t, "Closed(nil)", func() bool { return len(h.closedErrs(id1)) == 1 })
	if errs := h.closedErrs(id1); errs[0] != nil {
		t.Fatalf("CloseConn: Closed(%v), want nil", errs[0])
	}

	// The peer hangs up.
	c2, id2 := open()
	_ = c2.Close()
	waitFor(t, "Closed(EOF)", func() bool { return len(h.closedErrs(id2)) == 1 })
	if errs := h.closedErrs(id2); !errors.Is(errs[0], io.EOF) {
		t.Fatalf("hang-up: Closed(%v), want io.EOF", errs[0])
	}

	// Send closes a parked connection as a slow consumer: its client
	// stops reading, so once the socket buffers are full the queue passes
	// SendQueueBytes (bounded at 256 MiB sent).
	_, id3 := open()
	big := make([]byte, 1<<10)
	var err3 error
	for i := 0; i < 256<<10 && err3 == nil; i++ {
		if err3 = r.Send(id3, big); err3 == nil && i%64 == 63 {
			time.Sleep(100 * time.Microsecond) // let the writer fill the socket
		}
	}
	if !errors.Is(err3, ErrSlowConsumer) {
		t.Fatalf("Send to a client that stopped reading = %v, want ErrSlowConsumer", err3)
	}
	waitFor(t, "Closed(slow)", func() bool { return len(h.closedErrs(id3)) == 1 })
	if errs := h.closedErrs(id3); !errors.Is(errs[0], ErrSlowConsumer) {
		t.Fatalf("slow consumer: Closed(%v)", errs[0])
	}

	// Router.Close with parked connections.
	_, id4 := open()
	_, id5 := open()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []ConnID{id4, id5} {
		if errs := h.closedErrs(id); len(errs) != 1 || errs[0] != nil {
			t.Fatalf("Router.Close: conn %d Closed %v, want once with nil", id, errs)
		}
	}
	for _, id := range h.openedIDs() {
		if n := len(h.closedErrs(id)); n > 1 {
			t.Fatalf("conn %d closed %d times", id, n)
		}
	}
}

// A parked connection whose peer announces a huge frame is closed before
// anything is allocated, as with the goroutine reader; others are served.
func TestParkedConnectionHugeHeader(t *testing.T) {
	if !pollerSupported {
		t.Skip("no poller on this system")
	}
	h := newRecorder(true)
	cfg := smallRouterConfig()
	cfg.Poller = true
	r, err := Listen(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	h.router.Store(r)
	defer r.Close()
	good := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, good, "x")
	p := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "")
	waitFor(t, "opened", func() bool { return len(h.openedIDs()) == 2 })
	id := h.openedIDs()[1]
	waitParked(t, r, id)
	if _, err := p.nc.Write(longHeader(0, 1<<62)); err != nil {
		t.Fatal(err)
	}
	waitClosedByServer(t, p.nc)
	waitFor(t, "Closed", func() bool { return len(h.closedErrs(id)) == 1 })
	if errs := h.closedErrs(id); !errors.Is(errs[0], ErrFrameTooLarge) {
		t.Fatalf("Closed(%v), want ErrFrameTooLarge", errs[0])
	}
	if st := r.Stats(); st.OversizedFrames != 1 {
		t.Fatalf("OversizedFrames = %d, want 1", st.OversizedFrames)
	}
	roundTrip(t, good, "still served")
}
