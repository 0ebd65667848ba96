package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"
)

// ConnID names one accepted connection for the life of its Router. The
// Router assigns it (increasing from 1, never reused); the routing identity
// a peer declares in its handshake is ignored, so two peers declaring the
// same identity can never receive each other's frames.
type ConnID uint64

// Handler receives a Router's connection events. It is implemented by the
// node's gateway. Methods are called from the Router's reader goroutines
// (one per connection, or with RouterConfig.Poller one per connection that
// has bytes to read, never two at once for one connection), concurrently
// for different connections and in order for one connection: Opened, then
// any number of Received, then Closed. They MUST NOT
// block: a slow Handler stalls that connection's reading (and, through TCP,
// its peer). A panic in a method closes that connection with a cause wrapping
// ErrHandlerPanic; other connections are unaffected.
type Handler interface {
	// Opened is called once the connection has completed its handshake,
	// before any Received for it. Router.Send may be called for id from
	// here on.
	Opened(id ConnID, remote net.Addr)
	// Received delivers one single-frame message. The callee owns frame
	// from now on; the Router never touches it again.
	Received(id ConnID, frame []byte)
	// Closed is called exactly once per Opened, after the last Received,
	// when the connection is gone and its goroutines have finished. err is
	// nil when the close was local (CloseConn or Router.Close); otherwise it
	// is the cause: io.EOF when the peer closed, or an error wrapping
	// ErrFrameTooLarge, ErrProtocol, ErrQueueFull, ErrHandlerPanic or a
	// network error.
	Closed(id ConnID, err error)
}

// RouterStats is a snapshot of a Router's counters since Listen.
type RouterStats struct {
	// Accepted counts TCP connections returned by the listener.
	Accepted uint64
	// Active is the number of open (handshake completed) connections now.
	Active int64
	// Handshaking is the number of connections in their handshake now.
	Handshaking int64
	// HandshakeFailures counts handshakes that failed for a reason other
	// than the timeout (wrong protocol, TLS error, oversized or malformed
	// frames, peer gone).
	HandshakeFailures uint64
	// HandshakeTimeouts counts handshakes cut by HandshakeTimeout.
	HandshakeTimeouts uint64
	// RejectedConns counts connections closed at once because MaxConns
	// connections existed.
	RejectedConns uint64
	// RejectedHandshakes counts connections closed at once because
	// MaxHandshakes handshakes were in progress.
	RejectedHandshakes uint64
	// RejectedSourceConns counts connections closed at once because their
	// source already had MaxConnsPerSource connections.
	RejectedSourceConns uint64
	// RejectedSourceHandshakes counts connections closed at once because
	// their source already had MaxHandshakesPerSource handshakes in progress.
	RejectedSourceHandshakes uint64
	// Sources is the number of distinct sources (IPv4 addresses, IPv6 /64s)
	// with a connection now.
	Sources int
	// SlowConsumers counts connections closed because they fell behind by
	// more than SendQueueBytes, or had bytes queued when MaxQueuedBytes was
	// reached (see SlowConsumersNode).
	SlowConsumers uint64
	// SlowConsumersNode counts the part of SlowConsumers closed because the
	// node-wide MaxQueuedBytes was reached.
	SlowConsumersNode uint64
	// QueuedBytes is the number of bytes queued on all connections and not
	// yet handed to their sockets, now (at most MaxQueuedBytes +
	// QueueOverdraftBytes).
	QueuedBytes int64
	// ReadingBytes is the part of MaxReadingBytes held now by frames being
	// read (beyond their first 4 KiB) and not yet handed to the Handler.
	ReadingBytes int64
	// ReadingWaits counts the times a reader had to wait for
	// MaxReadingBytes (and stopped reading its connection meanwhile).
	ReadingWaits uint64
	// FrameTimeouts counts connections closed because a frame was not read
	// whole within FrameReadTimeout (cause ErrFrameTimeout), counted when
	// the connection is torn down, after its reading bytes are back in
	// ReadingBytes' budget.
	FrameTimeouts uint64
	// OversizedFrames counts connections closed because the peer announced
	// a frame larger than MaxFrameSize (in the handshake or later).
	OversizedFrames uint64
	// ProtocolErrors counts connections closed for a ZMTP violation after
	// the handshake.
	ProtocolErrors uint64
	// QueueFullCloses counts connections closed because their outbound
	// queue was full.
	QueueFullCloses uint64
	// MultipartDropped counts multi-part messages discarded (connection
	// kept).
	MultipartDropped uint64
	// MsgsIn and BytesIn count frames delivered to Handler.Received and
	// their bytes.
	MsgsIn, BytesIn uint64
	// MsgsOut and BytesOut count frames handed to the socket and their
	// bytes.
	MsgsOut, BytesOut uint64
	// InlineWrites counts frames SendNow wrote whole on its caller's
	// goroutine (included in MsgsOut).
	InlineWrites uint64
}

// shardCount splits the ConnID table so Send's lookup takes a short read
// lock on one of many shards; no lock is held across any socket write.
const shardCount = 64

type shard struct {
	mu sync.RWMutex
	m  map[ConnID]*serverConn
}

// serverConn is one accepted connection.
type serverConn struct {
	*link
	id     ConnID
	remote net.Addr
	src    *source

	// qmu orders Send's byte accounting with the teardown in finish, so
	// that bytes of frames never written are given back exactly once.
	qmu  sync.Mutex
	dead bool

	// With the poller (see readTurn): polled is set before the first
	// turn; sc reads and arms the socket; rstate says who owns the reading
	// state (br, head, rd, armed): a reader goroutine (readerRunning), the
	// poller (readerParked: no goroutine; the poller's event, or a
	// shutdown, claims it back with a compare-and-swap) or nobody any more
	// (readerDone). armed is set once the socket is registered.
	polled bool
	sc     syscall.RawConn
	rstate atomic.Uint32
	armed  bool
	// woken is set when the connection is parked: the next reader starts
	// with a read that does not wait. deadline is set while the linger
	// read deadline is (see lingerRead).
	woken    bool
	deadline bool
	// linger says whether the reader waits lingerFor before parking; it
	// is decided at each wake-up from how long the connection was parked
	// (parkedAt, on the Router's monotonic clock, see since). lingerFor
	// doubles, from pollLinger up to pollLingerMax, each time the
	// connection is woken soon after it parked (see readUntilIdle).
	linger    bool
	lingerFor time.Duration
	parkedAt  int64
}

// Reader states of a polled connection (serverConn.rstate).
const (
	readerRunning uint32 = iota
	readerParked
	readerDone
)

// source counts the connections of one source address; guarded by
// Router.mu.
type source struct {
	key               string
	conns, handshakes int
}

// sourceKey names the source of a connection: its IPv4 address, or the /64
// prefix of its IPv6 address (one host usually holds a whole /64).
func sourceKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Router is the server endpoint: a ZMTP 3 ROUTER on a TCP listener, with the
// limits of RouterConfig. Its methods are safe for concurrent use.
type Router struct {
	cfg RouterConfig
	h   Handler
	ln  net.Listener

	nextID atomic.Uint64
	shards [shardCount]shard

	// mu guards all and closed: every accepted connection, handshaking or
	// open, so that Close can reach each one.
	mu      sync.Mutex
	all     map[*serverConn]struct{}
	sources map[string]*source
	closed  bool
	// refusals are the refused connections being told why (see refuse).
	refusals map[net.Conn]struct{}

	quit      chan struct{} // closed by Close; ends the accept back-off
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // accept loop and every serve goroutine

	// conns counts connections that exist (handshaking or open) and
	// handshakes those in the handshake; only the accept loop increments
	// them, so its check-then-add cannot overshoot a limit.
	conns, handshakes, active atomic.Int64

	traffic                                   counters
	accepted, hsFailures, hsTimeouts          atomic.Uint64
	rejectedConns, rejectedHandshakes, qfulls atomic.Uint64
	rejectedSrcConns, rejectedSrcHandshakes   atomic.Uint64
	slow, slowNode                            atomic.Uint64
	// queued is the bytes queued on every connection together.
	queued atomic.Int64
	// reading is the node-wide budget of bytes of frames being read.
	reading       readBudget
	frameTimeouts atomic.Uint64

	// poll parks idle connections (RouterConfig.Poller); nil when the
	// goroutine reader is used. Its goroutine is stopped by Close after
	// every connection is gone.
	poll  *poller
	epoch time.Time
}

// Listen validates cfg, binds cfg.Addr and starts accepting connections
// for h. Stop it with Close.
func Listen(cfg RouterConfig, h Handler) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: nil Handler", ErrInvalidConfig)
	}
	addr := strings.TrimPrefix(cfg.Addr, "tcp://")
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	r := &Router{
		cfg:      cfg,
		h:        h,
		ln:       ln,
		all:      make(map[*serverConn]struct{}),
		sources:  make(map[string]*source),
		refusals: make(map[net.Conn]struct{}),
		quit:     make(chan struct{}),
		reading:  readBudget{limit: cfg.MaxReadingBytes},
		epoch:    time.Now(),
	}
	for i := range r.shards {
		r.shards[i].m = make(map[ConnID]*serverConn)
	}
	if cfg.Poller && pollerSupported && cfg.TLS == nil {
		p, err := newPoller(r.dispatch)
		if err != nil {
			_ = ln.Close()
			return nil, err
		}
		r.poll = p
		go p.run()
	}
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// Polled reports whether the Router parks idle connections in its poller
// (RouterConfig.Poller on a system that supports it, without TLS).
func (r *Router) Polled() bool { return r.poll != nil }

// Addr returns the listener's address (with the OS-chosen port).
func (r *Router) Addr() net.Addr { return r.ln.Addr() }

func (r *Router) shard(id ConnID) *shard { return &r.shards[id%shardCount] }

func (r *Router) lookup(id ConnID) *serverConn {
	s := r.shard(id)
	s.mu.RLock()
	c := s.m[id]
	s.mu.RUnlock()
	return c
}

// Send queues frame for connection id and returns at once; the Router owns
// frame from now on. It returns ErrUnknownConn if id is not open (never
// opened, closing or closed), ErrFrameTooLarge (connection kept) if frame
// exceeds MaxFrameSize, and ErrQueueFull when the connection's queue of
// SendQueue frames is full: that connection is then closed (its peer has
// stopped reading), and nobody else is affected. A connection whose queued
// bytes would pass SendQueueBytes, or that has bytes queued when all
// connections together would pass MaxQueuedBytes, or whose frame would pass
// MaxQueuedBytes + QueueOverdraftBytes even with an empty queue, is closed
// the same way with an error wrapping ErrSlowConsumer and ErrQueueFull.
func (r *Router) Send(id ConnID, frame []byte) error { return r.send(id, frame, false) }

// SendNow is Send for a frame to a connection that is likely idle (a
// keep-alive's answer, a watch notification): when nothing is queued or
// being written on it and it is plain TCP, a frame of up to 4 KiB is
// written on the caller's goroutine with one non-blocking write, instead of
// by a writer goroutine started for it (what the socket does not take at
// once still goes to one). It never blocks. Frames sent meanwhile by others
// go after it, in order. RouterStats.InlineWrites counts them.
func (r *Router) SendNow(id ConnID, frame []byte) error { return r.send(id, frame, true) }

func (r *Router) send(id ConnID, frame []byte, now bool) error {
	c := r.lookup(id)
	if c == nil || c.closing() {
		return ErrUnknownConn
	}
	if len(frame) > r.cfg.MaxFrameSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(frame), r.cfg.MaxFrameSize)
	}
	n := int64(len(frame))
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.dead {
		return ErrUnknownConn
	}
	q := c.queuedBytes.Load()
	var slow error
	if q+n > int64(r.cfg.SendQueueBytes) {
		slow = fmt.Errorf("%w: %w: %d bytes queued, limit %d", ErrSlowConsumer, ErrQueueFull, q, r.cfg.SendQueueBytes)
	} else if !r.reserve(n, q == 0) {
		slow = fmt.Errorf("%w: %w: %d bytes queued while the node's %d bytes (and %d of overdraft for empty queues) are in use",
			ErrSlowConsumer, ErrQueueFull, q, r.cfg.MaxQueuedBytes, r.cfg.QueueOverdraftBytes)
	}
	if slow != nil {
		if c.shutdown(slow, false) {
			r.slow.Add(1)
			if q+n <= int64(r.cfg.SendQueueBytes) {
				r.slowNode.Add(1)
			}
		}
		return slow
	}
	// Counted (r.queued by reserve) before the frame is visible to the
	// writer, which subtracts it when it takes the frame.
	c.queuedBytes.Add(n)
	if now && c.writeNow(frame) {
		return nil
	}
	switch err := c.enqueue(frame); {
	case err == nil:
		return nil
	case errors.Is(err, ErrClosed):
		c.queuedBytes.Add(-n)
		r.queued.Add(-n)
		return ErrUnknownConn
	default:
		c.queuedBytes.Add(-n)
		r.queued.Add(-n)
		if c.shutdown(fmt.Errorf("%w: %d frames waiting", ErrQueueFull, r.cfg.SendQueue), false) {
			r.qfulls.Add(1)
		}
		return ErrQueueFull
	}
}

// reserve adds n to the node's queued bytes if they stay within
// MaxQueuedBytes, or within MaxQueuedBytes + QueueOverdraftBytes for a
// connection whose queue is empty, and reports whether it did. The
// compare-and-swap makes the bound hold under concurrent Sends.
func (r *Router) reserve(n int64, emptyQueue bool) bool {
	limit := r.cfg.MaxQueuedBytes
	if emptyQueue {
		limit += r.cfg.QueueOverdraftBytes
	}
	for {
		cur := r.queued.Load()
		if cur+n > limit {
			return false
		}
		if r.queued.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// CloseConn closes connection id: frames already queued are written for up
// to Linger, then the socket is closed and Handler.Closed(id, nil) follows.
// Frames that arrive meanwhile are not delivered. It returns ErrUnknownConn
// if id is not open or already closing.
func (r *Router) CloseConn(id ConnID) error {
	c := r.lookup(id)
	if c == nil || !c.shutdown(nil, true) {
		return ErrUnknownConn
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (r *Router) Stats() RouterStats {
	return RouterStats{
		Accepted:                 r.accepted.Load(),
		Active:                   r.active.Load(),
		Handshaking:              r.handshakes.Load(),
		HandshakeFailures:        r.hsFailures.Load(),
		HandshakeTimeouts:        r.hsTimeouts.Load(),
		RejectedConns:            r.rejectedConns.Load(),
		RejectedHandshakes:       r.rejectedHandshakes.Load(),
		RejectedSourceConns:      r.rejectedSrcConns.Load(),
		RejectedSourceHandshakes: r.rejectedSrcHandshakes.Load(),
		Sources:                  r.numSources(),
		SlowConsumers:            r.slow.Load(),
		SlowConsumersNode:        r.slowNode.Load(),
		QueuedBytes:              r.queued.Load(),
		ReadingBytes:             r.reading.inUse.Load(),
		ReadingWaits:             r.reading.waits.Load(),
		FrameTimeouts:            r.frameTimeouts.Load(),
		OversizedFrames:          r.traffic.oversized.Load(),
		ProtocolErrors:           r.traffic.protocol.Load(),
		QueueFullCloses:          r.qfulls.Load(),
		MultipartDropped:         r.traffic.multipart.Load(),
		MsgsIn:                   r.traffic.msgsIn.Load(),
		BytesIn:                  r.traffic.bytesIn.Load(),
		MsgsOut:                  r.traffic.msgsOut.Load(),
		InlineWrites:             r.traffic.inline.Load(),
		BytesOut:                 r.traffic.bytesOut.Load(),
	}
}

func (r *Router) numSources() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sources)
}

// Close stops the listener, closes every connection (open ones flush their
// queues for up to Linger) and returns once every goroutine of the Router
// has finished and every Handler.Closed has returned. Later calls return
// the first call's result.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		close(r.quit)
		if err := r.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			r.closeErr = fmt.Errorf("transport: close listener: %w", err)
		}
		r.mu.Lock()
		r.closed = true
		conns := make([]*serverConn, 0, len(r.all))
		for c := range r.all {
			conns = append(conns, c)
		}
		for nc := range r.refusals {
			_ = nc.SetDeadline(aLongTimeAgo)
		}
		r.mu.Unlock()
		for _, c := range conns {
			c.shutdown(nil, true)
		}
	})
	r.wg.Wait()
	// Every connection is gone, so the poller has nothing left to report.
	if r.poll != nil {
		r.poll.stop()
	}
	return r.closeErr
}

// acceptLoop owns the listener: it admits connections within MaxConns and
// MaxHandshakes and gives each its own serve goroutine, so no handshake ever
// runs on this loop.
func (r *Router) acceptLoop() {
	defer r.wg.Done()
	var backoff time.Duration
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Typically EMFILE: wait (5 ms doubling to 1 s, as net/http
			// does) instead of spinning, and stop at once on Close.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
				continue
			case <-r.quit:
				t.Stop()
				return
			}
		}
		backoff = 0
		r.accepted.Add(1)
		if r.conns.Load() >= int64(r.cfg.MaxConns) {
			r.rejectedConns.Add(1)
			r.refuse(nc, "max_conns")
			continue
		}
		if r.handshakes.Load() >= int64(r.cfg.MaxHandshakes) {
			r.rejectedHandshakes.Add(1)
			r.refuse(nc, "max_handshakes")
			continue
		}
		c := &serverConn{remote: nc.RemoteAddr()}
		key := sourceKey(c.remote)
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			_ = nc.Close()
			return
		}
		src := r.sources[key]
		if src == nil {
			src = &source{key: key}
		}
		switch {
		case src.conns >= r.cfg.MaxConnsPerSource:
			r.mu.Unlock()
			r.rejectedSrcConns.Add(1)
			r.refuse(nc, "max_conns_per_source")
			continue
		case src.handshakes >= r.cfg.MaxHandshakesPerSource:
			r.mu.Unlock()
			r.rejectedSrcHandshakes.Add(1)
			r.refuse(nc, "max_handshakes_per_source")
			continue
		}
		src.conns++
		src.handshakes++
		r.sources[key] = src
		c.src = src
		r.all[c] = struct{}{}
		r.conns.Add(1)
		r.handshakes.Add(1)
		// Set before the goroutine starts so Close always finds a link.
		c.link = newLink(nc, nil, r.cfg.MaxFrameSize, r.cfg.Linger, &r.traffic)
		c.link.totalQueued = &r.queued
		c.link.rd = &reading{budget: &r.reading, timeout: r.cfg.FrameReadTimeout, quit: c.link.quit, expire: func() {
			// Counted by finish, once the reader has given the frame's
			// budget bytes back.
			c.shutdown(fmt.Errorf("%w: a frame was not received whole within %v", ErrFrameTimeout, r.cfg.FrameReadTimeout), false)
		}}
		if r.poll != nil {
			// A parked connection has no reader to notice its close:
			// claim it and start one, which tears it down.
			c.link.onClose = func() {
				if c.rstate.CompareAndSwap(readerParked, readerRunning) {
					r.wg.Add(1)
					go r.readWorker(c)
				}
			}
		}
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(c)
	}
}

// Refusal notices: at most maxRefusals connections at a time are told why
// they are refused, each for at most refusalLinger; others are closed
// silently, so a flood cannot make refusing cost more than this.
const (
	maxRefusals   = 64
	refusalLinger = 500 * time.Millisecond
)

// refuse closes a connection refused at a limit. When fewer than
// maxRefusals notices are in progress, it first tells the peer why (a ZMTP
// greeting and an ERROR command "TooManyConnections: <limit>", which a
// client's Dial reports as ErrTooManyConnections): on its own goroutine it
// writes the notice, half-closes, and reads what the peer sends until the
// peer closes or refusalLinger passes, so that closing does not reset the
// connection before the peer has read the notice.
func (r *Router) refuse(nc net.Conn, limit string) {
	r.mu.Lock()
	if r.closed || len(r.refusals) >= maxRefusals {
		r.mu.Unlock()
		_ = nc.Close()
		return
	}
	r.refusals[nc] = struct{}{}
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.refusals, nc)
			r.mu.Unlock()
			_ = nc.Close()
		}()
		_ = nc.SetDeadline(time.Now().Add(refusalLinger))
		if _, err := nc.Write(refusalNotice(limit)); err != nil {
			return
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, 64<<10))
	}()
}

// serve owns one connection from accept: it runs the handshake, calls
// Opened, then either runs the read loop to the end and tears the
// connection down (finish), or, with the poller, runs the first reading
// turn, after which the connection is parked or finished (readTurn).
func (r *Router) serve(c *serverConn) {
	defer r.wg.Done()
	c.br = pooledReader(c.raw)
	err := r.handshake(c)
	r.mu.Lock()
	c.src.handshakes--
	r.mu.Unlock()
	r.handshakes.Add(-1)
	if err != nil {
		// shutdown reports false when Close got there first: then the
		// failure is ours, not the peer's, and is not counted.
		byPeer := c.shutdown(err, false)
		_ = c.raw.Close()
		c.releaseReader(true)
		r.forget(c)
		switch {
		case !byPeer:
		case errors.Is(err, os.ErrDeadlineExceeded):
			r.hsTimeouts.Add(1)
		default:
			r.hsFailures.Add(1)
			if errors.Is(err, ErrFrameTooLarge) {
				r.traffic.oversized.Add(1)
			}
		}
		return
	}

	c.id = ConnID(r.nextID.Add(1))
	c.allowWriteNow()
	c.start(r.cfg.SendQueue)
	s := r.shard(c.id)
	s.mu.Lock()
	s.m[c.id] = c
	s.mu.Unlock()
	r.active.Add(1)

	if err := r.opened(c); err != nil {
		c.shutdown(err, false)
	} else if sc := r.pollable(c); sc != nil {
		c.sc = sc
		c.polled = true
		c.linger, c.lingerFor = true, pollLinger // a new client's first request comes soon
		// The connection's life is counted apart from this goroutine,
		// which ends when the connection is first parked.
		r.wg.Add(1)
		r.readTurn(c)
		return
	} else if err := r.readLoop(c); err != nil {
		c.shutdown(err, false)
	}
	r.finish(c)
}

// forget removes a connection from the Router's connection and source
// counts, once it is gone.
func (r *Router) forget(c *serverConn) {
	r.mu.Lock()
	delete(r.all, c)
	if c.src.conns--; c.src.conns == 0 {
		delete(r.sources, c.src.key)
	}
	r.mu.Unlock()
	r.conns.Add(-1)
}

// finish tears down an open connection whose reading has ended (it is
// closing): it waits for the writer, gives back queued bytes, closes the
// socket, removes the ConnID and calls Closed. It runs on the connection's
// last reader goroutine.
func (r *Router) finish(c *serverConn) {
	c.rstate.Store(readerDone)
	c.writers.Wait()
	// Bytes of frames the writer never took are given back; Sends that
	// still find c see dead and queue nothing more.
	c.qmu.Lock()
	c.dead = true
	r.queued.Add(-c.queuedBytes.Swap(0))
	c.qmu.Unlock()
	_ = c.raw.Close()
	_ = c.nc.Close()
	s := r.shard(c.id)
	s.mu.Lock()
	delete(s.m, c.id)
	s.mu.Unlock()
	r.active.Add(-1)
	if errors.Is(c.cause, ErrFrameTimeout) {
		// Counted here, after the reader released its reading budget, so
		// that whoever sees the count also sees the bytes back.
		r.frameTimeouts.Add(1)
	}
	r.closed1(c.id, c.cause)
	r.forget(c)
	if c.polled {
		r.wg.Done()
	}
}

// maxHandshakeFrame bounds a command frame a client may send in its
// handshake (zmq4 allocates the announced size of each): READY with a
// socket type and a routing identity of up to 255 bytes takes a few hundred
// bytes, and this keeps the handshakes in progress at MaxHandshakes × 4 KiB
// rather than MaxHandshakes × MaxFrameSize (1 GiB at the defaults).
const maxHandshakeFrame = UnbudgetedFrameBytes

// handshake runs TLS (if configured) and the ZMTP handshake under
// HandshakeTimeout, then clears the deadline. A handshake frame over
// maxHandshakeFrame (or MaxFrameSize, if smaller) fails it before zmq4
// allocates anything.
func (r *Router) handshake(c *serverConn) error {
	if err := c.raw.SetDeadline(time.Now().Add(r.cfg.HandshakeTimeout)); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	// A Close that ran before the deadline was set closed the socket
	// already; this check makes sure the handshake does not outlive it.
	if c.closing() {
		return fmt.Errorf("%w: %w", ErrHandshake, ErrClosed)
	}
	if r.cfg.TLS != nil {
		tc := tls.Server(c.raw, r.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("%w: tls: %w", ErrHandshake, err)
		}
		c.nc = tc
		c.br.Reset(tc)
	}
	if err := handshake(c.nc, c.br, min(r.cfg.MaxFrameSize, maxHandshakeFrame), zmq4.Router, nil, true); err != nil {
		return err
	}
	if err := c.raw.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if c.closing() {
		return fmt.Errorf("%w: %w", ErrHandshake, ErrClosed)
	}
	return nil
}

// readLoop delivers frames until the connection fails or starts closing.
// ZMTP commands are handled here and never reach the Handler. The reading
// budget a frame held is given back once the frame is handed off.
func (r *Router) readLoop(c *serverConn) error {
	defer c.rd.release()
	for {
		c.rd.release()
		body, kind, err := c.readMsg()
		if c.closing() {
			return nil
		}
		if err := r.deliver(c, body, kind, err); err != nil {
			return err
		}
	}
}

// deliver acts on one message read from c (or the error reading it): data
// goes to the Handler, commands are handled here, errors are counted and
// returned.
func (r *Router) deliver(c *serverConn, body []byte, kind msgKind, err error) error {
	if err != nil {
		switch {
		case errors.Is(err, ErrFrameTooLarge):
			r.traffic.oversized.Add(1)
		case errors.Is(err, ErrProtocol):
			r.traffic.protocol.Add(1)
		}
		return err
	}
	switch kind {
	case kindData:
		r.traffic.msgsIn.Add(1)
		r.traffic.bytesIn.Add(uint64(len(body)))
		return r.received(c.id, body)
	case kindDropped:
		r.traffic.multipart.Add(1)
	case kindCommand:
		if err := c.command(body); err != nil {
			r.traffic.protocol.Add(1)
			return err
		}
	}
	return nil
}

// pollable returns the raw socket of an open connection that the poller
// can park (a plain TCP connection on a Router with a poller), or nil.
func (r *Router) pollable(c *serverConn) syscall.RawConn {
	if r.poll == nil || c.nc != c.raw {
		return nil
	}
	tc, ok := c.raw.(*net.TCPConn)
	if !ok {
		return nil
	}
	sc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return sc
}

// dispatch is the poller's hand-off: connection id became readable (or
// hung up), so a reader goroutine is started for it unless it is no longer
// parked (closed meanwhile, its teardown already claimed it).
func (r *Router) dispatch(id ConnID) {
	c := r.lookup(id)
	if c == nil || !c.rstate.CompareAndSwap(readerParked, readerRunning) {
		return
	}
	r.wg.Add(1)
	go r.readWorker(c)
}

// readWorker is a reader goroutine started by the poller or by a shutdown
// of a parked connection; the Router's WaitGroup owns it.
func (r *Router) readWorker(c *serverConn) {
	defer r.wg.Done()
	r.readTurn(c)
}

// readTurn reads a polled connection for as long as it has bytes: every
// message is delivered as readLoop does (the same readMessage, limits,
// budget and frame-read timeout; a message that has started arriving is
// read to its end with blocking reads). When a read at a message boundary
// finds nothing, the connection is parked in the poller and the goroutine
// ends: the pooled reader is already back and the reading budget released,
// so a parked connection holds no goroutine and no buffer. On an error or
// a close it is torn down (finish).
//
// There is no pool of readers to starve: each readable connection has its
// own reader goroutine (at most one, and at most MaxConns together), and
// the Go scheduler shares the CPUs among them, so a busy connection delays
// others no more than with the goroutine reader.
func (r *Router) readTurn(c *serverConn) {
	for {
		idle, err := r.readUntilIdle(c)
		if !idle {
			if err != nil {
				c.shutdown(err, false)
			}
			r.finish(c)
			return
		}
		first := !c.armed
		c.armed = true
		c.woken = true
		c.parkedAt = r.since()
		// From the Store on, the poller or a shutdown may claim c and
		// start another reader: nothing below touches the reading state.
		c.rstate.Store(readerParked)
		if c.closing() {
			// A shutdown that ran before the Store found c running and
			// left the teardown to this reader.
			if c.rstate.CompareAndSwap(readerParked, readerRunning) {
				continue
			}
			return
		}
		if err := r.poll.arm(c.sc, c.id, first); err != nil {
			if !c.rstate.CompareAndSwap(readerParked, readerRunning) {
				return // closed meanwhile; its teardown reader owns c
			}
			if errors.Is(err, ErrClosed) || !first {
				c.shutdown(err, false)
				continue
			}
			// The poller cannot take it (epoll's max_user_watches):
			// this goroutine stays its reader, as without the poller.
			if r.clearDeadline(c) {
				if err := r.readLoop(c); err != nil {
					c.shutdown(err, false)
				}
			}
			r.finish(c)
		}
		return
	}
}

// pollLinger is how long a polled connection's reader waits for the next
// message (in Go's own netpoller, like the goroutine reader) before it
// parks the connection. A connection that exchanges messages back to back
// (a client sending its next request as soon as it has the reply) then
// keeps its reader instead of paying a park and a wake-up, each an
// epoll_ctl, an epoll_wait wake-up and a goroutine start, per message; a
// connection that falls silent longer (a keep-alive-only session, one
// message a second) holds a goroutine for this long after each message,
// 0.2 % of the time.
const pollLinger = 2 * time.Millisecond

// pollLingerMax bounds the linger of a busy connection. Each time a
// connection is woken within pollSparse of parking, its linger doubles up
// to this, so a connection whose messages come a few milliseconds apart
// (64 clients with 8 requests in flight each: one every 2 ms or so per
// connection, about pollLinger) keeps its reader instead of being parked
// and woken for most of them; measured on that load, the poller's CPU per
// write went from 1.14× the goroutine reader's to 1.02–1.04×. A sparse
// wake-up starts it again from nothing.
const pollLingerMax = 16 * time.Millisecond

// pollSparse: a connection woken after being parked longer than this
// parks again as soon as it has nothing to read, without lingering (a
// keep-alive-only session pays no linger timer and read deadline per
// message); one woken sooner lingers after its next message.
const pollSparse = 50 * time.Millisecond

// since is the Router's monotonic clock, in nanoseconds since Listen.
func (r *Router) since() int64 { return int64(time.Since(r.epoch)) }

// lingerRead waits up to lingerFor for the first bytes of the next
// message, in head. It returns errWouldBlock when none came.
//
// The read deadline it sets stays set (and past) while the connection is
// parked (tryRead ignores deadlines) and is cleared when bytes arrive, so
// that the rest of a message is read without one. Every change of the
// deadline is followed by a check of closing: a graceful shutdown sets a
// past read deadline after it marks the link closing, so either the check
// sees the close or the shutdown's deadline comes after ours.
func (r *Router) lingerRead(c *serverConn) (int, error) {
	if !c.deadline {
		if err := c.raw.SetReadDeadline(time.Now().Add(c.lingerFor)); err != nil {
			return 0, err
		}
		c.deadline = true
		if c.closing() {
			return 0, ErrClosed
		}
	}
	n, err := c.nc.Read(c.head[:])
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errWouldBlock
	}
	if n > 0 && !r.clearDeadline(c) {
		return 0, ErrClosed
	}
	return n, err
}

// clearDeadline removes the linger deadline, if set, and reports false
// when the connection is closing (see lingerRead).
func (r *Router) clearDeadline(c *serverConn) bool {
	if c.deadline {
		if err := c.raw.SetReadDeadline(time.Time{}); err != nil {
			return false
		}
		c.deadline = false
	}
	return !c.closing()
}

// readUntilIdle delivers the messages a polled connection has, as
// readLoop does, and reports idle when a read at a message boundary finds
// nothing to read. Otherwise it returns the error that ends the connection
// (nil when it is closing).
func (r *Router) readUntilIdle(c *serverConn) (idle bool, err error) {
	defer c.rd.release()
	for {
		c.rd.release()
		if c.closing() {
			return false, nil
		}
		if c.br == nil {
			var n int
			var err error
			switch {
			case c.woken:
				// Started by the poller: read what is there without
				// waiting (a spurious wake-up parks again). A connection
				// that was parked long is a sparse one: it parks as soon
				// as it has nothing to read, without lingering.
				c.woken = false
				c.linger = r.since() < c.parkedAt+int64(pollSparse)
				if c.linger {
					c.lingerFor = min(max(2*c.lingerFor, pollLinger), pollLingerMax)
				} else {
					c.lingerFor = 0
				}
				n, err = tryRead(c.sc, c.head[:])
				if n > 0 && !r.clearDeadline(c) {
					return false, nil
				}
			case c.linger:
				n, err = r.lingerRead(c)
			default:
				n, err = tryRead(c.sc, c.head[:])
			}
			if errors.Is(err, errWouldBlock) {
				return true, nil
			}
			if n == 0 {
				if c.closing() {
					return false, nil
				}
				return false, err
			}
			c.began(n, err)
		}
		body, kind, err := c.readBuffered()
		if c.closing() {
			return false, nil
		}
		if err := r.deliver(c, body, kind, err); err != nil {
			return false, err
		}
	}
}

// command reacts to a ZMTP command received after the handshake: PING is
// answered with PONG through the writer, ERROR closes the connection, and
// anything else (PONG, SUBSCRIBE, ...) is ignored.
func (l *link) command(body []byte) error {
	name, data, err := parseCommand(body)
	if err != nil {
		return err
	}
	switch name {
	case cmdPing:
		l.owePong(pongFor(data))
	case cmdError:
		return fmt.Errorf("%w: peer sent ERROR %q", ErrProtocol, data)
	}
	return nil
}

// opened, received and closed1 call the Handler and turn a panic into an
// error, so a Handler bug closes one connection instead of the process.
func (r *Router) opened(c *serverConn) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: Opened: %v", ErrHandlerPanic, p)
		}
	}()
	r.h.Opened(c.id, c.remote)
	return nil
}

func (r *Router) received(id ConnID, body []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: Received: %v", ErrHandlerPanic, p)
		}
	}()
	r.h.Received(id, body)
	return nil
}

func (r *Router) closed1(id ConnID, cause error) {
	// A panic in Closed has nothing left to close; it is contained so the
	// Router and its Close keep working.
	defer func() { _ = recover() }()
	r.h.Closed(id, cause)
}
