package transport

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Buffer sizes of every connection. The writer's buffer is what lets many
// small frames leave in one syscall under load; 8 KiB holds about 75 frames
// of 100 bytes and stays under one TLS record.
const (
	readBufferSize  = 4096
	writeBufferSize = 8192
)

// aLongTimeAgo is a deadline in the past: setting it makes blocked reads
// return at once.
var aLongTimeAgo = time.Unix(1, 0)

// counters are the traffic counters shared by a Router's connections, or
// owned by one client Conn.
type counters struct {
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
	oversized, multipart, protocol     atomic.Uint64
}

// link is one established ZMTP connection's data path, shared by the Router
// and the client Conn: a buffered reader used by exactly one reader, a
// bounded outbound queue, and one writer goroutine that owns the buffered
// writer. Nothing here is locked across a socket write.
type link struct {
	// raw is the accepted or dialled socket; shutdown uses only raw, so it
	// may run on any goroutine. nc is raw or the TLS connection over it and
	// belongs to the reader and the writer; it is set before start.
	raw    net.Conn
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	limit  int
	linger time.Duration
	stats  *counters

	// queue holds frames for the writer; Send never blocks on it.
	queue chan []byte
	// queuedBytes counts the bytes of frames in queue (added by the
	// Router's Send before it queues a frame, subtracted by the writer when
	// it takes one); totalQueued, when set, is the Router's sum over its
	// connections and moves with it.
	queuedBytes atomic.Int64
	totalQueued *atomic.Int64
	// pong holds at most one PONG owed to the peer. A PING that finds it
	// full is not answered separately: the pending PONG already proves
	// liveness.
	pong chan []byte

	// done is closed when the link starts closing; cause and graceful are
	// written before and read after.
	done     chan struct{}
	once     sync.Once
	cause    error
	graceful bool
	// open is set once the writer runs, so a close before that never waits
	// for a writer to flush.
	open atomic.Bool
	// writerDone is closed when the writer goroutine has returned.
	writerDone chan struct{}
}

func newLink(nc net.Conn, br *bufio.Reader, limit int, linger time.Duration, stats *counters) *link {
	return &link{
		raw:        nc,
		nc:         nc,
		br:         br,
		limit:      limit,
		linger:     linger,
		stats:      stats,
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

// start allocates the write side and starts the writer goroutine. The
// caller owns that goroutine: it must wait on writerDone.
func (l *link) start(queue int) {
	l.bw = bufio.NewWriterSize(l.nc, writeBufferSize)
	l.queue = make(chan []byte, queue)
	l.pong = make(chan []byte, 1)
	l.open.Store(true)
	go l.writeLoop()
}

// closing reports whether shutdown has begun.
func (l *link) closing() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// shutdown starts closing the link once and reports whether this call did
// it. A graceful shutdown lets the writer flush what is already queued for
// up to linger before it closes the socket; otherwise the socket is closed
// at once, which also unblocks a writer stuck on a peer that stopped
// reading. Either way the reader is unblocked immediately.
func (l *link) shutdown(cause error, graceful bool) bool {
	first := false
	l.once.Do(func() {
		first = true
		l.cause = cause
		l.graceful = graceful && l.linger > 0 && l.open.Load()
		close(l.done)
		if l.graceful {
			_ = l.raw.SetWriteDeadline(time.Now().Add(l.linger))
			_ = l.raw.SetReadDeadline(aLongTimeAgo)
		} else {
			_ = l.raw.Close()
		}
	})
	return first
}

// took accounts for a frame of n bytes the writer took from the queue.
func (l *link) took(n int) {
	if l.totalQueued != nil {
		l.queuedBytes.Add(-int64(n))
		l.totalQueued.Add(-int64(n))
	}
}

// writeLoop is the writer goroutine: it moves frames from the queue into
// the buffered writer and flushes only when the queue is empty, so under
// load many frames share one syscall while an idle connection still sends
// each frame at once.
func (l *link) writeLoop() {
	defer close(l.writerDone)
	defer func() {
		if p := recover(); p != nil {
			l.shutdown(fmt.Errorf("%w: writer panicked: %v", ErrProtocol, p), false)
		}
	}()
	for {
		var err error
		select {
		case f := <-l.queue:
			l.took(len(f))
			err = writeFrame(l.bw, 0, f)
			msgs, bytes := uint64(1), uint64(len(f))
			// Bounded so a producer that never lets the queue drain still
			// lets the loop notice done.
			for n := cap(l.queue); err == nil && n > 0 && len(l.queue) > 0; n-- {
				f = <-l.queue
				l.took(len(f))
				err = writeFrame(l.bw, 0, f)
				msgs, bytes = msgs+1, bytes+uint64(len(f))
			}
			// Counted when handed to the socket buffer, once per batch.
			l.stats.msgsOut.Add(msgs)
			l.stats.bytesOut.Add(bytes)
		case p := <-l.pong:
			err = writeCommand(l.bw, cmdPong, p)
		case <-l.done:
			l.finish()
			return
		}
		if err == nil && len(l.queue) == 0 && len(l.pong) == 0 {
			// Yield once before the syscall: frames produced together
			// (replies to proposals that dragonboat completed in one
			// batch) then join this write instead of each paying a
			// syscall of its own. If any arrived, the loop drains them
			// and comes back here.
			runtime.Gosched()
			if len(l.queue) == 0 && len(l.pong) == 0 {
				err = l.bw.Flush()
			}
		}
		if err != nil {
			l.shutdown(err, false)
			return
		}
	}
}

// finish runs in the writer when the link closes: a graceful close writes
// what was queued before it (bounded by the queue's capacity and by the
// write deadline shutdown set), then closes the socket.
func (l *link) finish() {
	if !l.graceful {
		return
	}
	var err error
	for n := cap(l.queue); err == nil && n > 0 && len(l.queue) > 0; n-- {
		f := <-l.queue
		l.took(len(f))
		if err = writeFrame(l.bw, 0, f); err == nil {
			l.stats.msgsOut.Add(1)
			l.stats.bytesOut.Add(uint64(len(f)))
		}
	}
	if err == nil {
		err = l.bw.Flush()
	}
	if err != nil {
		// Closing raw first keeps a TLS close_notify from waiting on a
		// peer that is not reading.
		_ = l.raw.Close()
	}
	_ = l.nc.Close()
}
