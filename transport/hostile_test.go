package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// attackerAddr is a second loopback address: connections dialled from it
// are another source than the well-behaved clients on 127.0.0.1.
var attackerAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}

// dialFrom opens n TCP connections to addr from the attacker's address.
func dialFrom(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: attackerAddr, Timeout: waitLimit}
	conns := make([]net.Conn, 0, n)
	for range n {
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("attacker dial: %v", err)
		}
		conns = append(conns, nc)
	}
	t.Cleanup(func() {
		for _, nc := range conns {
			_ = nc.Close()
		}
	})
	return conns
}

// Issue 10, row 1: 260 connections that send nothing (or their greeting a
// byte at a time) from one host used to take every one of the 256
// handshake slots, so new clients were refused until the attacker stopped.
// With MaxHandshakesPerSource the host holds at most its share and a
// client from elsewhere completes its handshake and is served.
func TestHandshakeFloodFromOneSourceDoesNotLockOut(t *testing.T) {
	for _, mode := range []string{"silent", "byte-by-byte"} {
		t.Run(mode, func(t *testing.T) {
			cfg := DefaultRouterConfig()
			cfg.HandshakeTimeout = waitLimit
			h := newRecorder(true)
			r := listen(t, cfg, h)
			attack := dialFrom(t, r.Addr().String(), 260)
			if mode == "byte-by-byte" {
				g := greeting()
				for _, nc := range attack {
					_, _ = nc.Write(g[:1]) // may fail on a connection already refused
				}
			}
			waitFor(t, "attack admitted or refused", func() bool {
				st := r.Stats()
				return st.Handshaking+int64(st.RejectedSourceHandshakes) == 260
			})
			st := r.Stats()
			if st.Handshaking != int64(cfg.MaxHandshakesPerSource) || st.RejectedSourceHandshakes != uint64(260-cfg.MaxHandshakesPerSource) {
				t.Fatalf("handshaking %d, refused for the source %d; want %d and %d",
					st.Handshaking, st.RejectedSourceHandshakes, cfg.MaxHandshakesPerSource, 260-cfg.MaxHandshakesPerSource)
			}
			for i := range 3 {
				c := dial(t, r.Addr().String(), DefaultDialConfig())
				roundTrip(t, c, fmt.Sprintf("served-%d", i))
			}
			if st := r.Stats(); st.RejectedHandshakes != 0 || st.Sources != 2 {
				t.Fatalf("stats %+v: want no global refusals and two sources", st)
			}
		})
	}
}

// One host cannot hold more than MaxConnsPerSource connections, handshaking
// or open; others still connect, and the host's slots come back when its
// connections close.
func TestMaxConnsPerSource(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.MaxConnsPerSource = 3
	h := newRecorder(true)
	r := listen(t, cfg, h)
	d := net.Dialer{LocalAddr: attackerAddr, Timeout: waitLimit}
	for range 3 {
		nc, err := d.Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		if _, err := zmq4.Open(nc, null.Security(), zmq4.Dealer, nil, false, nil); err != nil {
			t.Fatalf("attacker handshake: %v", err)
		}
	}
	waitFor(t, "three attacker conns open", func() bool { return r.Stats().Active == 3 })
	extra := dialFrom(t, r.Addr().String(), 2)
	waitClosedByServer(t, extra[0])
	waitClosedByServer(t, extra[1])
	if st := r.Stats(); st.RejectedSourceConns != 2 || st.RejectedConns != 0 {
		t.Fatalf("RejectedSourceConns %d RejectedConns %d, want 2 and 0", st.RejectedSourceConns, st.RejectedConns)
	}
	for i := range 3 { // a full share from another source
		c := dial(t, r.Addr().String(), DefaultDialConfig())
		roundTrip(t, c, fmt.Sprint(i))
	}
}

// Issue 10, row 6: a connection that never reads its replies used to keep
// 1,024 frames of any size queued (85 MB each at the sizes). The
// queue is now bounded in bytes: the connection is closed as a slow
// consumer once SendQueueBytes are waiting, and its bytes are given back.
func TestSlowConsumerClosedAtByteBudget(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.MaxFrameSize = 256 << 10
	cfg.SendQueueBytes = 1 << 20
	h := newRecorder(true)
	r := listen(t, cfg, h)
	newRawPeer(t, r.Addr().String(), zmq4.Dealer, "") // never reads
	waitFor(t, "stalled opened", func() bool { return len(h.openedIDs()) == 1 })
	id := h.openedIDs()[0]
	frame := make([]byte, 64<<10)
	var err error
	sent := 0
	// The socket buffers take a few MiB before the queue grows; 1,000
	// frames (64 MiB) is far more than both together.
	for ; sent < 1000 && err == nil; sent++ {
		err = r.Send(id, frame)
		if q := r.Stats().QueuedBytes; q > int64(cfg.SendQueueBytes) {
			t.Fatalf("QueuedBytes %d over the %d budget", q, cfg.SendQueueBytes)
		}
	}
	if !errors.Is(err, ErrSlowConsumer) || !errors.Is(err, ErrQueueFull) {
		t.Fatalf("after %d frames Send = %v, want ErrSlowConsumer", sent, err)
	}
	waitFor(t, "slow consumer closed", func() bool { return len(h.closedErrs(id)) == 1 })
	if err := h.closedErrs(id)[0]; !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("Closed err = %v, want ErrSlowConsumer", err)
	}
	if st := r.Stats(); st.SlowConsumers != 1 || st.QueuedBytes != 0 {
		t.Fatalf("SlowConsumers %d QueuedBytes %d, want 1 and 0", st.SlowConsumers, st.QueuedBytes)
	}
}

// Many connections that never read cannot queue more than MaxQueuedBytes
// plus the overdraft for empty queues between them (before, one frame per
// connection whose queue was empty: MaxConns × MaxFrameSize), while a
// client that reads keeps being served.
func TestQueuedBytesBoundedAcrossConnections(t *testing.T) {
	cfg := smallRouterConfig()
	cfg.MaxFrameSize = 256 << 10
	cfg.SendQueueBytes = 4 << 20
	cfg.MaxQueuedBytes = 2 << 20
	cfg.QueueOverdraftBytes = 256 << 10
	h := newRecorder(true)
	r := listen(t, cfg, h)
	good := dial(t, r.Addr().String(), DefaultDialConfig())
	roundTrip(t, good, "warm-up")
	const stalled = 10
	for range stalled {
		newRawPeer(t, r.Addr().String(), zmq4.Dealer, "")
	}
	waitFor(t, "stalled opened", func() bool { return len(h.openedIDs()) == stalled+1 })
	ids := h.openedIDs()[1:]
	frame := make([]byte, 128<<10)
	bound := cfg.MaxQueuedBytes + cfg.QueueOverdraftBytes
	open := map[ConnID]bool{}
	for _, id := range ids {
		open[id] = true
	}
	deadline := time.Now().Add(waitLimit)
	for round := 0; len(open) > 0 && round < 2000 && time.Now().Before(deadline); round++ {
		for id := range open {
			if err := r.Send(id, frame); err != nil {
				if !errors.Is(err, ErrSlowConsumer) {
					t.Fatalf("Send = %v, want nil or ErrSlowConsumer", err)
				}
				delete(open, id)
			}
			if q := r.Stats().QueuedBytes; q > bound {
				t.Fatalf("QueuedBytes %d over MaxQueuedBytes plus the overdraft (%d)", q, bound)
			}
		}
		if round%20 == 0 {
			roundTrip(t, good, fmt.Sprint("during-", round))
		}
	}
	if len(open) != 0 {
		t.Fatalf("%d stalled connections never closed", len(open))
	}
	roundTrip(t, good, "after")
	waitFor(t, "queued bytes given back", func() bool { return r.Stats().QueuedBytes == 0 })
	if st := r.Stats(); st.SlowConsumers != stalled || st.SlowConsumersNode == 0 {
		t.Fatalf("SlowConsumers %d (node budget %d), want %d with some at the node budget", st.SlowConsumers, st.SlowConsumersNode, stalled)
	}
}

// Issue 10: a client refused at a connection limit used to see only a
// closed connection (EOF in its handshake). The Router now answers the
// greeting with an ERROR command naming the limit, and Dial reports it as
// ErrTooManyConnections.
func TestRefusedDialSaysTooManyConnections(t *testing.T) {
	for _, tc := range []struct {
		limit string
		tweak func(*RouterConfig)
		hold  func(t *testing.T, addr string)
	}{
		{"max_conns", func(c *RouterConfig) { c.MaxConns, c.MaxHandshakes = 1, 1 },
			func(t *testing.T, addr string) { dial(t, addr, DefaultDialConfig()) }},
		{"max_handshakes", func(c *RouterConfig) { c.MaxHandshakes = 1 },
			func(t *testing.T, addr string) { dialFrom(t, addr, 1) }},
		{"max_conns_per_source", func(c *RouterConfig) { c.MaxConnsPerSource = 1 },
			func(t *testing.T, addr string) { dial(t, addr, DefaultDialConfig()) }},
		{"max_handshakes_per_source", func(c *RouterConfig) { c.MaxHandshakesPerSource = 1 },
			func(t *testing.T, addr string) {
				nc, err := net.Dial("tcp", addr) // silent, from 127.0.0.1
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = nc.Close() })
			}},
	} {
		t.Run(tc.limit, func(t *testing.T) {
			cfg := smallRouterConfig()
			tc.tweak(&cfg)
			h := newRecorder(true)
			r := listen(t, cfg, h)
			tc.hold(t, r.Addr().String())
			waitFor(t, "slot held", func() bool { st := r.Stats(); return st.Active+st.Handshaking == 1 })
			_, err := Dial(context.Background(), r.Addr().String(), DefaultDialConfig())
			if !errors.Is(err, ErrTooManyConnections) || !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), tc.limit) {
				t.Fatalf("Dial = %v, want ErrTooManyConnections naming %s", err, tc.limit)
			}
		})
	}
}
