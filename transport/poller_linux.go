//go:build linux

package transport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// pollerSupported says whether RouterConfig.Poller takes effect here.
const pollerSupported = true

// pollEvents bounds the readiness events taken per epoll_wait; more ready
// connections are simply reported by the next call.
const pollEvents = 256

// poller parks idle Router connections in one epoll instance, so that an
// idle connection needs no goroutine. One goroutine (run) collects the
// readiness events and hands each connection that became readable to
// dispatch, which starts a reader goroutine for it; that goroutine reads
// until the connection has nothing more to read at a message boundary and
// parks it again (see Router.readTurn).
//
// The epoll instance is itself waited for in Go's netpoller (an epoll
// descriptor is readable while it has events, and it is registered there
// through os.NewFile): run blocks like any network read, holding no OS
// thread, and a reader goroutine it starts runs as soon as run blocks
// again. A goroutine blocked in epoll_wait would hold its P in a system
// call with the new readers queued behind it until sysmon took the P back
// (measured: +90 µs per wake-up on an idle machine).
//
// Registrations use EPOLLONESHOT, level-triggered: an event disables the
// registration until the reader re-arms it with EPOLL_CTL_MOD after its
// last read. One-shot rather than edge-triggered because it gives the
// hand-off the property the Handler contract needs: after an event nothing
// more is reported for that connection until its reader is done with it,
// so at most one reader runs per connection and frames are delivered in
// order, and a reader may stop at a message boundary while bytes remain in
// the socket (re-arming a level-triggered registration with data pending
// reports it again at once), which an edge-triggered registration would
// lose. Registration data is the ConnID, never reused, so a late event for
// a closed connection (whose descriptor number may already belong to a new
// one) finds nothing.
//
// Registrations are never deleted: the kernel drops a registration when
// the descriptor is closed, and a deletion after that could hit a new
// connection that reused the number. Every epoll_ctl runs inside
// RawConn.Control, which keeps the descriptor open meanwhile.
type poller struct {
	epfd     int
	f        *os.File // epfd, registered in Go's netpoller
	rc       syscall.RawConn
	dispatch func(id ConnID)
	done     chan struct{}
	stopOnce sync.Once
}

// newPoller creates the epoll instance; run is its goroutine.
func newPoller(dispatch func(id ConnID)) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("transport: poller: %w", os.NewSyscallError("epoll_create1", err))
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("transport: poller: %w", os.NewSyscallError("fcntl", err))
	}
	// Non-blocking, so os.NewFile registers it in the netpoller.
	f := os.NewFile(uintptr(epfd), "transport-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("transport: poller: %w", err)
	}
	return &poller{epfd: epfd, f: f, rc: rc, dispatch: dispatch, done: make(chan struct{})}, nil
}

// run collects events and dispatches until stop. It is the poller's only
// goroutine; stop waits for it.
func (p *poller) run() {
	defer close(p.done)
	var events [pollEvents]unix.EpollEvent
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), events[:], 0)
		// Nothing ready: wait in the netpoller for the instance to be
		// readable.
		return n > 0 || (werr != nil && werr != unix.EINTR)
	}
	for {
		if err := p.rc.Read(wait); err != nil {
			return // stop closed the instance
		}
		if werr != nil {
			// EBADF/EINVAL cannot happen while the instance is open;
			// stop rather than spin.
			return
		}
		for i := range n {
			p.dispatch(ConnID(uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32))
		}
	}
}

// stop closes the epoll instance, which ends run, and waits for run.
func (p *poller) stop() {
	p.stopOnce.Do(func() {
		_ = p.f.Close()
		<-p.done
	})
}

// rawOp is one epoll_ctl or read on a connection's descriptor, run inside
// RawConn.Control. Ops are pooled with their callbacks bound once, so the
// park and wake-up path allocates nothing for them (a closure per call
// cost 3–4 allocations per wake-up).
type rawOp struct {
	buf    []byte
	n      int
	err    error
	epfd   int
	op     int
	ev     unix.EpollEvent
	readFn func(fd uintptr)
	ctlFn  func(fd uintptr)
}

var rawOps = sync.Pool{New: func() any {
	o := &rawOp{}
	o.readFn = o.read
	o.ctlFn = o.ctl
	return o
}}

func (o *rawOp) read(fd uintptr) {
	for {
		o.n, o.err = unix.Read(int(fd), o.buf)
		if o.err != unix.EINTR {
			return
		}
	}
}

func (o *rawOp) ctl(fd uintptr) {
	o.err = unix.EpollCtl(o.epfd, o.op, int(fd), &o.ev)
}

// arm registers (first) or re-arms the connection's descriptor for one
// readiness event. It fails with ErrClosed once the connection's
// descriptor is closed.
func (p *poller) arm(sc syscall.RawConn, id ConnID, first bool) error {
	o := rawOps.Get().(*rawOp)
	defer rawOps.Put(o)
	o.epfd, o.op, o.err = p.epfd, unix.EPOLL_CTL_MOD, nil
	if first {
		o.op = unix.EPOLL_CTL_ADD
	}
	o.ev = unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd:     int32(uint32(id)),
		Pad:    int32(uint32(id >> 32)),
	}
	if err := sc.Control(o.ctlFn); err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	if o.err != nil {
		return os.NewSyscallError("epoll_ctl", o.err)
	}
	return nil
}

// errWouldBlock is tryRead's answer when nothing is there to read.
var errWouldBlock = errors.New("transport: would block")

// tryRead reads what is available now into b without waiting: it returns
// errWouldBlock when nothing is, io.EOF when the peer closed. It reads
// inside Control (which keeps the descriptor open meanwhile), not
// RawConn.Read, so a read deadline left set does not apply.
func tryRead(sc syscall.RawConn, b []byte) (int, error) {
	o := rawOps.Get().(*rawOp)
	o.buf, o.n, o.err = b, 0, nil
	err := sc.Control(o.readFn)
	n, rerr := o.n, o.err
	o.buf = nil
	rawOps.Put(o)
	switch {
	case err != nil:
		return 0, err
	case rerr == unix.EAGAIN:
		return 0, errWouldBlock
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	case n <= 0:
		return 0, io.EOF
	}
	return n, nil
}
