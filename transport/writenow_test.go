package transport

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// TestSendNowKeepsOrderWhenSocketFills checks SendNow's inline write: on an
// idle plain-TCP connection the frame is written on the caller's goroutine,
// and once the socket's buffer is full (the peer does not read) what the
// socket did not take, and everything sent after it with SendNow or Send,
// reaches the peer intact and in order through a writer goroutine.
func TestSendNowKeepsOrderWhenSocketFills(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.SendQueue = 4096
	h := newRecorder(false)
	r := listen(t, cfg, h)
	p := newRawPeer(t, r.Addr().String(), zmq4.Dealer, "") // reads only at the end
	waitFor(t, "peer opened", func() bool { return len(h.openedIDs()) == 1 })
	id := h.openedIDs()[0]

	// Frames of 60 bytes (the link's own small buffer), 300 bytes (a long
	// ZMTP header, a pooled buffer) and 4,096 bytes (the largest written
	// inline), in turn.
	sizes := []int{60, 300, maxWriteNow}
	frame := func(i int) []byte {
		f := make([]byte, sizes[i%len(sizes)])
		copy(f, fmt.Sprintf("%08d", i))
		return f
	}
	// First SendNow alone: each is written inline until the socket's
	// buffer is full, which shows as a frame not written whole. Loopback
	// buffers hold a few MiB, so that comes after some tens of thousands
	// of frames; the bound only keeps a bug from looping.
	sent, fellBack := 0, -1
	for ; sent < 400000 && fellBack < 0; sent++ {
		if err := r.SendNow(id, frame(sent)); err != nil {
			t.Fatalf("send %d: %v", sent, err)
		}
		if r.Stats().InlineWrites < uint64(sent+1) {
			fellBack = sent
		}
	}
	// Then a thousand more, mixed with ordinary sends, while the writer
	// is stuck on the full socket: all of them queue behind the rest of
	// that frame.
	for end := sent + 1000; sent < end; sent++ {
		send := r.SendNow
		if sent%7 == 0 {
			send = r.Send
		}
		if err := send(id, frame(sent)); err != nil {
			t.Fatalf("send %d: %v", sent, err)
		}
	}
	st := r.Stats()
	t.Logf("sent %d, %d inline, first queued SendNow at %d", sent, st.InlineWrites, fellBack)
	if fellBack < 0 {
		t.Fatalf("every one of %d frames was written inline: the socket never filled, so this did not test the fallback", sent)
	}
	if st.InlineWrites == 0 {
		t.Fatal("no frame was written inline")
	}
	_ = p.nc.SetDeadline(time.Now().Add(waitLimit))
	for i := 0; i < sent; i++ {
		msg, err := p.zc.RecvMsg()
		if err != nil {
			t.Fatalf("recv %d of %d: %v", i, sent, err)
		}
		if len(msg.Frames) != 1 || string(msg.Frames[0]) != string(frame(i)) {
			t.Fatalf("frame %d: got %q", i, msg.Frames)
		}
	}
	// Idle again: the next answer is inline once more.
	before := r.Stats().InlineWrites
	if err := r.SendNow(id, frame(sent)); err != nil {
		t.Fatal(err)
	}
	if got := r.Stats().InlineWrites; got != before+1 {
		t.Fatalf("InlineWrites %d after a SendNow to an idle connection, want %d", got, before+1)
	}
	if msg := p.recv(t); string(msg.Frames[0]) != string(frame(sent)) {
		t.Fatalf("last frame: got %q", msg.Frames)
	}
	if st := r.Stats(); st.QueuedBytes != 0 {
		t.Fatalf("QueuedBytes %d after everything was written, want 0", st.QueuedBytes)
	}
	// Larger frames are queued as usual, and a closed connection refuses.
	before = r.Stats().InlineWrites
	if err := r.SendNow(id, make([]byte, maxWriteNow+1)); err != nil {
		t.Fatal(err)
	}
	if msg := p.recv(t); len(msg.Frames[0]) != maxWriteNow+1 {
		t.Fatalf("large frame: got %d bytes", len(msg.Frames[0]))
	}
	if got := r.Stats().InlineWrites; got != before {
		t.Fatalf("a frame over %d bytes was written inline", maxWriteNow)
	}
	_ = r.CloseConn(id)
	if err := r.SendNow(id, frame(0)); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("SendNow after close = %v, want ErrUnknownConn", err)
	}
}
