package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// The budget grants in order, never past its limit, and a waiter that
// quits leaves without the bytes and lets the next one in.
func TestReadBudgetOrderAndQuit(t *testing.T) {
	b := &readBudget{limit: 100}
	never := make(chan struct{})
	if err := b.acquire(80, never); err != nil {
		t.Fatal(err)
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	var quitErr, laterErr error
	granted := make(chan struct{})
	wg.Add(2)
	go func() { defer wg.Done(); quitErr = b.acquire(50, quit) }()
	waitFor(t, "first waiter queued", func() bool { return b.waits.Load() == 1 })
	go func() { defer wg.Done(); laterErr = b.acquire(20, never); close(granted) }()
	waitFor(t, "second waiter queued", func() bool { return b.waits.Load() == 2 })
	select {
	case <-granted:
		t.Fatal("a later waiter that fits overtook the first")
	case <-time.After(20 * time.Millisecond):
	}
	close(quit)
	wg.Wait()
	if !errors.Is(quitErr, ErrClosed) || laterErr != nil {
		t.Fatalf("quit waiter: %v, later waiter: %v", quitErr, laterErr)
	}
	if got := b.inUse.Load(); got != 100 {
		t.Fatalf("in use %d, want 100", got)
	}
	b.release(80)
	b.release(20)
	if got := b.inUse.Load(); got != 0 {
		t.Fatalf("in use %d after release, want 0", got)
	}
}

// slowFrameSender is an attacker connection: handshaken, it announces a
// frame of size bytes and then sends its body slowly.
type slowFrameSender struct {
	nc   net.Conn
	left int
}

func newSlowFrameSender(t *testing.T, addr string, size int) *slowFrameSender {
	t.Helper()
	nc := dialFrom(t, addr, 1)[0]
	_ = nc.SetDeadline(time.Now().Add(waitLimit))
	if _, err := zmq4.Open(nc, null.Security(), zmq4.Dealer, nil, false, nil); err != nil {
		t.Fatalf("attacker handshake: %v", err)
	}
	hdr := make([]byte, 9)
	hdr[0] = flagLong
	binary.BigEndian.PutUint64(hdr[1:], uint64(size))
	if _, err := nc.Write(hdr); err != nil {
		t.Fatal(err)
	}
	return &slowFrameSender{nc: nc, left: size}
}

// trickle writes n more body bytes, giving up quietly when the server has
// stopped reading (backpressure) or closed the connection.
func (s *slowFrameSender) trickle(n int) {
	n = min(n, s.left)
	_ = s.nc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	k, _ := s.nc.Write(bytes.Repeat([]byte{'x'}, n))
	s.left -= k
}

// Issue 10: frames being read used to hold up to MaxFrameSize per
// connection, bounded only by MaxConns (40 GiB at the defaults). Many
// connections that announce big frames and send their bodies slowly now
// hold at most MaxReadingBytes between them (beyond 4 KiB each), wait
// instead of reading while it is spent, and are closed with ErrFrameTimeout
// once FrameReadTimeout passes; a client sending small frames is served
// throughout, and a big frame is read once the budget is free again.
func TestReadingBudgetHoldsUnderSlowBigFrames(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.MaxFrameSize = 1 << 20
	cfg.MaxReadingBytes = 1 << 20
	cfg.FrameReadTimeout = 2 * time.Second
	h := newRecorder(true)
	r := listen(t, cfg, h)
	good := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, good, "warm-up")

	const attackers = 24
	var senders []*slowFrameSender
	for range attackers {
		senders = append(senders, newSlowFrameSender(t, r.Addr().String(), 1<<20))
	}
	waitFor(t, "attackers opened", func() bool { return len(h.openedIDs()) == attackers+1 })
	// Each sends up to 256 KiB of its 1 MiB: together 6 MiB, six times the
	// budget, and none completes its frame.
	var peak int64
	for round := 0; round < 16; round++ {
		for _, s := range senders {
			s.trickle(16 << 10)
		}
		roundTrip(t, good, "during")
		if got := r.Stats().ReadingBytes; got > peak {
			peak = got
		}
		if peak > cfg.MaxReadingBytes {
			t.Fatalf("frames being read hold %d bytes, budget %d", peak, cfg.MaxReadingBytes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := r.Stats()
	t.Logf("peak reading bytes %d of %d; waits %d", peak, cfg.MaxReadingBytes, st.ReadingWaits)
	if st.ReadingWaits == 0 || peak < cfg.MaxReadingBytes/2 {
		t.Fatalf("ReadingWaits %d, peak %d: the attack did not reach the budget", st.ReadingWaits, peak)
	}

	// Past FrameReadTimeout every attacker is closed, typed and counted,
	// and the budget is whole again.
	waitFor(t, "attackers closed", func() bool { return h.numClosed() == attackers })
	for _, id := range h.openedIDs()[1:] {
		if errs := h.closedErrs(id); len(errs) != 1 || !errors.Is(errs[0], ErrFrameTimeout) {
			t.Fatalf("conn %d closed with %v, want ErrFrameTimeout", id, errs)
		}
	}
	if st := r.Stats(); st.FrameTimeouts != attackers || st.ReadingBytes != 0 {
		t.Fatalf("FrameTimeouts %d ReadingBytes %d, want %d and 0", st.FrameTimeouts, st.ReadingBytes, attackers)
	}
	big := string(bytes.Repeat([]byte{'b'}, 512<<10))
	roundTrip(t, good, big)
	if got := r.Stats().ReadingBytes; got != 0 {
		t.Fatalf("ReadingBytes %d after the big frame was handed off, want 0", got)
	}
}

// A handshake command frame is bounded by 4 KiB whatever MaxFrameSize is:
// zmq4 allocates the announced size of each, so before, MaxHandshakes
// silent handshakes each announcing MaxFrameSize could pin MaxHandshakes ×
// MaxFrameSize (1 GiB at the defaults). A normal client still connects.
func TestHandshakeFrameBounded(t *testing.T) {
	cfg := smallRouterConfig() // MaxFrameSize 4 MiB
	h := newRecorder(true)
	r := listen(t, cfg, h)
	nc := dialFrom(t, r.Addr().String(), 1)[0]
	cmd := longHeader(flagCommand, maxHandshakeFrame+1)
	if _, err := nc.Write(append(greeting(), cmd...)); err != nil {
		t.Fatalf("write: %v", err)
	}
	waitClosedByServer(t, nc)
	waitFor(t, "handshake failure counted", func() bool { return r.Stats().HandshakeFailures == 1 })
	if st := r.Stats(); st.OversizedFrames != 1 {
		t.Fatalf("OversizedFrames = %d, want 1", st.OversizedFrames)
	}
	roundTrip(t, dial(t, r.Addr().String(), DefaultDialConfig()), "served")
}
