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
// idle connection needs no goroutine. One goroutine (run) waits in
// epoll_wait and hands each connection that became readable to dispatch,
// which starts a reader goroutine for it; that goroutine reads until the
// connection has nothing more to read at a message boundary and parks it
// again (see Router.readTurn).
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
	wakefd   int // an eventfd; a write ends run
	dispatch func(id ConnID)
	done     chan struct{}
	stopOnce sync.Once
}

// newPoller creates the epoll instance; start runs its goroutine.
func newPoller(dispatch func(id ConnID)) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("transport: poller: %w", os.NewSyscallError("epoll_create1", err))
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("transport: poller: %w", os.NewSyscallError("eventfd", err))
	}
	// The wake descriptor's data is 0, which no ConnID has.
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("transport: poller: %w", os.NewSyscallError("epoll_ctl", err))
	}
	return &poller{epfd: epfd, wakefd: wakefd, dispatch: dispatch, done: make(chan struct{})}, nil
}

// run waits for readiness and dispatches until stop. It is the poller's
// only goroutine; stop waits for it.
func (p *poller) run() {
	defer close(p.done)
	var events [pollEvents]unix.EpollEvent
	for {
		n, err := unix.EpollWait(p.epfd, events[:], -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// EBADF/EINVAL cannot happen while the instance is open;
			// stop rather than spin.
			return
		}
		for i := range n {
			id := ConnID(uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32)
			if id == 0 {
				return
			}
			p.dispatch(id)
		}
	}
}

// stop ends run, waits for it and closes the descriptors.
func (p *poller) stop() {
	p.stopOnce.Do(func() {
		// Any non-zero 8-byte value makes the eventfd readable.
		one := [8]byte{1}
		_, _ = unix.Write(p.wakefd, one[:])
		<-p.done
		_ = unix.Close(p.epfd)
		_ = unix.Close(p.wakefd)
	})
}

// arm registers (first) or re-arms the connection's descriptor for one
// readiness event. It fails with ErrClosed once the connection's
// descriptor is closed.
func (p *poller) arm(sc syscall.RawConn, id ConnID, first bool) error {
	var cerr error
	err := sc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
			Fd:     int32(uint32(id)),
			Pad:    int32(uint32(id >> 32)),
		}
		op := unix.EPOLL_CTL_MOD
		if first {
			op = unix.EPOLL_CTL_ADD
		}
		if e := unix.EpollCtl(p.epfd, op, int(fd), &ev); e != nil {
			cerr = os.NewSyscallError("epoll_ctl", e)
		}
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return cerr
}

// errWouldBlock is tryRead's answer when nothing is there to read.
var errWouldBlock = errors.New("transport: would block")

// tryRead reads what is available now into b without waiting: it returns
// errWouldBlock when nothing is, io.EOF when the peer closed.
func tryRead(sc syscall.RawConn, b []byte) (int, error) {
	var n int
	var rerr error
	err := sc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), b)
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == unix.EAGAIN:
		return 0, errWouldBlock
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
