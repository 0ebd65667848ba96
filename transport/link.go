package transport

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Buffer sizes. A connection holds its read and write buffers only while
// bytes are moving: the buffers come from pools (readers, writers) when a
// message starts arriving or a frame is queued, and go back as soon as the
// connection is idle again, so an idle connection holds neither. The
// writer's buffer is what lets many small frames leave in one syscall under
// load; 8 KiB holds about 75 frames of 100 bytes and stays under one TLS
// record. headSize is the small buffer an idle connection waits in: a
// keep-alive or a small request arrives whole in it.
const (
	readBufferSize  = 4096
	writeBufferSize = 8192
	headSize        = 64
	// maxSpare bounds the capacity of the frame slice a busy writer keeps
	// for the next batch; a larger one (a burst) is let go, so a queue that
	// grew shrinks back.
	maxSpare = 64
)

// readers and writers pool the buffers of connections that are moving bytes.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}
)

// aLongTimeAgo is a deadline in the past: setting it makes blocked reads
// return at once.
var aLongTimeAgo = time.Unix(1, 0)

// counters are the traffic counters shared by a Router's connections, or
// owned by one client Conn.
type counters struct {
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
	oversized, multipart, protocol     atomic.Uint64
	// inline counts frames written by writeNow on the sender's goroutine.
	inline atomic.Uint64
}

// prefixed is what a pooled reader reads from after an idle wait: first the
// bytes that arrived in the link's head buffer, then the connection.
type prefixed struct {
	b   []byte
	nc  net.Conn
	err error // returned once b is consumed, when the first read also failed
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.b) > 0 {
		n := copy(b, p.b)
		p.b = p.b[n:]
		return n, nil
	}
	if p.err != nil {
		err := p.err
		p.err = nil
		return 0, err
	}
	return p.nc.Read(b)
}

// link is one established ZMTP connection's data path, shared by the Router
// and the client Conn: a reader used by exactly one goroutine at a time, an
// outbound queue that grows with use and shrinks back, and a writer
// goroutine that runs only while there is something to write. Nothing here
// is locked across a socket write.
type link struct {
	// raw is the accepted or dialled socket; shutdown uses only raw, so it
	// may run on any goroutine. nc is raw or the TLS connection over it and
	// belongs to the reader and the writer; it is set before start.
	raw    net.Conn
	nc     net.Conn
	limit  int
	linger time.Duration
	stats  *counters
	// rd, on a Router connection, draws frame bytes beyond readFree from
	// the node-wide reading budget; nil on a client Conn.
	rd *reading
	// quit is closed when the link starts closing, which ends a wait for
	// the reading budget.
	quit chan struct{}

	// br is the pooled buffered reader while a message is being read (and
	// during the handshake); nil while the connection waits between
	// messages, which it does in head. Owned by the reading goroutine.
	br   *bufio.Reader
	head [headSize]byte
	pre  prefixed
	// small holds a lone small frame (header and body) written without a
	// pooled buffer: a keep-alive answer is one such frame. Owned by
	// whoever holds the writer role (writing).
	small [headSize]byte
	// rc is the plain TCP socket's raw connection, for writeNow; nil under
	// TLS or on another kind of net.Conn.
	rc syscall.RawConn
	// rest is what the socket did not take of a frame writeNow wrote: the
	// writer sends it before anything else. Guarded by mu.
	rest []byte

	// queuedBytes counts the bytes of frames in the queue (added by the
	// Router's Send before it queues a frame, subtracted by the writer when
	// it takes one); totalQueued, when set, is the Router's sum over its
	// connections and moves with it.
	queuedBytes atomic.Int64
	totalQueued *atomic.Int64

	// mu guards the queue and the writer's state; it is never held across
	// a socket write.
	mu sync.Mutex
	// q holds frames for the writer, at most maxFrames; spare is the
	// writer's previous batch, reused for the next one while it is small.
	q, spare  [][]byte
	maxFrames int
	// pong is the PONG data owed to the peer when pongDue. A PING that
	// finds one owed is not answered separately: the pending PONG already
	// proves liveness.
	pong    []byte
	pongDue bool
	// writing is set while a writer goroutine runs; it is started by the
	// first frame queued to an idle link and returns once it has flushed
	// everything. writers counts them for whoever waits for the link.
	writing bool
	writers sync.WaitGroup
	// stopped is set under mu when shutdown begins: nothing is queued and
	// no writer is started after it, except the one that flushes a
	// graceful close.
	stopped bool

	// closed is set when the link starts closing; cause and graceful are
	// written before it and read after.
	once     sync.Once
	closed   atomic.Bool
	cause    error
	graceful bool
	// open is set by start, so a close before that never waits for a
	// writer to flush.
	open atomic.Bool
	// onClose, when set (before start), runs once after shutdown has begun,
	// on the goroutine that began it: a Router connection parked in the
	// poller has no reader blocked in Read to notice the close, so this
	// starts one. It must not block.
	onClose func()
}

func newLink(nc net.Conn, br *bufio.Reader, limit int, linger time.Duration, stats *counters) *link {
	return &link{raw: nc, nc: nc, br: br, limit: limit, linger: linger, stats: stats, quit: make(chan struct{})}
}

// allowWriteNow lets writeNow write on plain TCP connections (not under
// TLS, whose records only its own Write produces). Called before start.
func (l *link) allowWriteNow() {
	if !canWriteOnce || l.nc != l.raw {
		return
	}
	if sc, ok := l.raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			l.rc = rc
		}
	}
}

// pooledReader returns a reader from the pool reading from r.
func pooledReader(r net.Conn) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// releaseReader gives the reader back to the pool when it holds no bytes
// that are not yet parsed (and unconditionally when force is set, after the
// connection failed).
func (l *link) releaseReader(force bool) {
	if l.br == nil || (!force && (l.br.Buffered() > 0 || len(l.pre.b) > 0 || l.pre.err != nil)) {
		return
	}
	l.br.Reset(nil)
	readers.Put(l.br)
	l.br = nil
	l.pre = prefixed{}
}

// start opens the write side: from now on frames may be queued, and a
// writer goroutine runs whenever some are. The caller waits for the
// writers with writers.Wait once the link is closing.
func (l *link) start(queue int) {
	l.mu.Lock()
	l.maxFrames = queue
	l.mu.Unlock()
	l.open.Store(true)
	l.releaseReader(false)
}

// readMsg reads the next message (see readMessage). Between messages the
// connection waits in the small head buffer; a pooled reader is taken when
// bytes arrive and given back once they are all parsed.
func (l *link) readMsg() ([]byte, msgKind, error) {
	if l.br == nil {
		n, err := l.nc.Read(l.head[:])
		for n == 0 && err == nil {
			// A read of nothing without an error: wait again.
			n, err = l.nc.Read(l.head[:])
		}
		if n == 0 {
			return nil, kindData, err
		}
		l.began(n, err)
	}
	return l.readBuffered()
}

// began takes a pooled reader for a message whose first n bytes arrived in
// head (err is what the read that brought them returned besides).
func (l *link) began(n int, err error) {
	l.pre = prefixed{b: l.head[:n], nc: l.nc, err: err}
	l.br = pooledReader(nil)
	l.br.Reset(&l.pre)
}

// readBuffered reads the rest of a message whose start is in br, with
// blocking reads of nc for what has not arrived yet, and gives the reader
// back once everything it holds is parsed.
func (l *link) readBuffered() ([]byte, msgKind, error) {
	body, kind, err := readMessage(l.br, l.limit, l.rd)
	l.releaseReader(err != nil)
	return body, kind, err
}

// closing reports whether shutdown has begun.
func (l *link) closing() bool { return l.closed.Load() }

// shutdown starts closing the link once and reports whether this call did
// it. A graceful shutdown lets a writer flush what is already queued for up
// to linger before it closes the socket; otherwise the socket is closed at
// once, which also unblocks a writer stuck on a peer that stopped reading.
// Either way the reader is unblocked immediately.
func (l *link) shutdown(cause error, graceful bool) bool {
	first := false
	l.once.Do(func() {
		first = true
		l.mu.Lock()
		l.cause = cause
		l.graceful = graceful && l.linger > 0 && l.open.Load()
		l.stopped = true
		if l.graceful {
			// The writer flushes the queue and closes nc (a TLS
			// close_notify); one is started if none runs.
			l.wakeLocked()
		}
		// Set after the flushing writer is counted: whoever sees the link
		// closing and then waits for its writers waits for that one too.
		l.closed.Store(true)
		close(l.quit)
		l.mu.Unlock()
		if l.graceful {
			_ = l.raw.SetWriteDeadline(time.Now().Add(l.linger))
			_ = l.raw.SetReadDeadline(aLongTimeAgo)
		} else {
			_ = l.raw.Close()
		}
		if l.onClose != nil {
			l.onClose()
		}
	})
	return first
}

// enqueue queues frame for the writer, starting one if none runs. It
// returns ErrClosed once the link is closing and ErrQueueFull when
// maxFrames frames are waiting.
func (l *link) enqueue(frame []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopped:
		return ErrClosed
	case len(l.q) >= l.maxFrames:
		return ErrQueueFull
	}
	l.q = append(l.q, frame)
	l.wakeLocked()
	return nil
}

// maxWriteNow is the largest frame body writeNow writes on the caller's
// goroutine; larger frames always go through the queue and a writer.
const maxWriteNow = 4096

// nowBufs holds the buffers writeNow builds a frame larger than the
// link's small buffer in (header and body, for one write).
var nowBufs = sync.Pool{New: func() any { b := make([]byte, 0, 9+maxWriteNow); return &b }}

// writeNow writes a lone frame of up to maxWriteNow bytes on the caller's
// goroutine, with one
// non-blocking write, when the link is idle (no writer runs, nothing is
// queued) and plain TCP: an idle connection's answer (a keep-alive's) then
// costs no writer goroutine and no hand-off between goroutines. While it
// writes it holds the writer role, so frames queued meanwhile wait and go
// after it, in order; whatever the socket did not take goes to a writer
// goroutine before them. It reports false, having done nothing, when the
// frame must be queued instead (enqueue). The caller has counted the
// frame's bytes as queued; they are given back as the writer would.
func (l *link) writeNow(frame []byte) bool {
	if l.rc == nil || len(frame) > maxWriteNow {
		return false
	}
	l.mu.Lock()
	if l.stopped || l.writing || l.pendingLocked() || !l.open.Load() {
		l.mu.Unlock()
		return false
	}
	l.writing = true
	l.writers.Add(1)
	l.mu.Unlock()
	defer l.writers.Done()

	// The frame with its header in one buffer, for one write: the link's
	// own for a small frame, a pooled one otherwise.
	buf := l.small[:0]
	var pooled *[]byte
	if len(frame) > headSize-2 {
		pooled = nowBufs.Get().(*[]byte)
		buf = (*pooled)[:0]
	}
	buf = appendFrameHeader(buf, 0, len(frame))
	buf = append(buf, frame...)
	n := len(buf)
	wrote, err := writeOnce(l.rc, buf)
	l.took(len(frame))
	if err != nil {
		l.failWriter(err)
		return true
	}
	l.stats.msgsOut.Add(1)
	l.stats.bytesOut.Add(uint64(len(frame)))
	l.mu.Lock()
	l.writing = false
	if wrote == n {
		l.stats.inline.Add(1)
	} else {
		// The socket's buffer is full: the writer sends the rest first
		// (and blocks on the socket, as it may).
		l.rest = append([]byte(nil), buf[wrote:n]...)
	}
	if pooled != nil {
		nowBufs.Put(pooled)
	}
	if l.pendingLocked() || (l.stopped && l.graceful) {
		l.wakeLocked()
	}
	l.mu.Unlock()
	return true
}

// owePong records that a PONG with data is owed and starts a writer if
// none runs.
func (l *link) owePong(data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || l.pongDue {
		return
	}
	l.pong, l.pongDue = data, true
	l.wakeLocked()
}

// wakeLocked starts a writer goroutine unless one runs. Called with mu held.
func (l *link) wakeLocked() {
	if l.writing || !l.open.Load() {
		return
	}
	l.writing = true
	l.writers.Add(1)
	go l.writeLoop()
}

// took accounts for a frame of n bytes the writer took from the queue.
func (l *link) took(n int) {
	if l.totalQueued != nil {
		l.queuedBytes.Add(-int64(n))
		l.totalQueued.Add(-int64(n))
	}
}

// pendingLocked reports whether anything waits for the writer.
func (l *link) pendingLocked() bool { return len(l.q) > 0 || l.pongDue || l.rest != nil }

// writeLoop is a writer goroutine: it takes the whole queue at once, writes
// it into a pooled buffered writer and flushes only when the queue is
// empty, so under load many frames share one syscall while a lone frame is
// sent at once. When nothing is left it gives its buffer back and returns;
// the next frame queued starts a new writer. After a graceful shutdown it
// flushes what was queued (within the write deadline shutdown set) and
// closes nc.
func (l *link) writeLoop() {
	defer l.writers.Done()
	var bw *bufio.Writer
	defer func() {
		if bw != nil {
			bw.Reset(nil)
			writers.Put(bw)
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			l.shutdown(fmt.Errorf("%w: writer panicked: %v", ErrProtocol, p), false)
		}
	}()
	lingered := false
	for {
		l.mu.Lock()
		if !l.pendingLocked() && !lingered && !l.stopped {
			// Idle: yield once before giving up, so that a reply produced
			// right after the last one reuses this goroutine and buffer.
			l.mu.Unlock()
			lingered = true
			runtime.Gosched()
			continue
		}
		lingered = false
		if l.stopped && !l.graceful {
			l.writing = false
			l.mu.Unlock()
			return
		}
		if !l.pendingLocked() {
			// Idle, and everything written was flushed: let the queue
			// and the buffer go.
			l.writing = false
			l.q, l.spare = nil, nil
			final := l.stopped
			l.mu.Unlock()
			if final {
				_ = l.nc.Close()
			}
			return
		}
		batch, pong, pongDue, rest := l.q, l.pong, l.pongDue, l.rest
		l.q, l.spare = l.spare, nil
		l.pong, l.pongDue, l.rest = nil, false, nil
		l.mu.Unlock()

		var err error
		if rest != nil {
			// The end of a frame writeNow began: before anything else.
			if _, err = l.nc.Write(rest); err != nil {
				l.failWriter(err)
				return
			}
		}
		if len(batch) == 1 && !pongDue && bw == nil && len(batch[0]) <= headSize-2 && !l.more() {
			// A lone small frame (the common answer) goes out in one write
			// from the link's own small buffer, without a pooled writer.
			f := batch[0]
			l.small[0], l.small[1] = 0, byte(len(f))
			n := 2 + copy(l.small[2:], f)
			_, err = l.nc.Write(l.small[:n])
			l.took(len(f))
			batch[0] = nil
			if err != nil {
				l.failWriter(err)
				return
			}
			l.stats.msgsOut.Add(1)
			l.stats.bytesOut.Add(uint64(len(f)))
			l.mu.Lock()
			if cap(batch) <= maxSpare {
				l.spare = batch[:0]
			}
			l.mu.Unlock()
			continue
		}
		if bw == nil {
			bw = writers.Get().(*bufio.Writer)
			bw.Reset(l.nc)
		}
		if pongDue {
			err = writeCommand(bw, cmdPong, pong)
		}
		var bytes uint64
		for i, f := range batch {
			if err == nil {
				err = writeFrame(bw, 0, f)
			}
			l.took(len(f))
			bytes += uint64(len(f))
			batch[i] = nil
		}
		if err == nil && len(batch) > 0 {
			// Counted when handed to the socket buffer, once per batch.
			l.stats.msgsOut.Add(uint64(len(batch)))
			l.stats.bytesOut.Add(bytes)
		}
		if err == nil && !l.more() {
			// Yield once before the syscall: frames produced together
			// (replies to proposals that dragonboat completed in one
			// batch) then join this write instead of each paying a
			// syscall of its own. If any arrived, the loop writes them
			// and comes back here.
			runtime.Gosched()
			if !l.more() {
				err = bw.Flush()
				if err == nil {
					// Everything is out: the buffer goes back to the pool
					// before this goroutine lingers, so writers waiting for
					// a CPU do not each hold 8 KiB.
					bw.Reset(nil)
					writers.Put(bw)
					bw = nil
				}
			}
		}
		if err != nil {
			l.failWriter(err)
			return
		}
		l.mu.Lock()
		if cap(batch) <= maxSpare {
			l.spare = batch[:0]
		}
		l.mu.Unlock()
	}
}

// failWriter ends a writer whose write failed: the link is shut down and
// whatever is queued is dropped (its bytes are given back by the owner).
func (l *link) failWriter(err error) {
	if l.closing() {
		// Closing raw first keeps a TLS close_notify from waiting on a
		// peer that is not reading.
		_ = l.raw.Close()
	}
	l.shutdown(err, false)
	l.mu.Lock()
	l.writing = false
	l.q, l.spare = nil, nil
	l.mu.Unlock()
}

// more reports whether frames or a PONG wait for the writer.
func (l *link) more() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pendingLocked()
}
