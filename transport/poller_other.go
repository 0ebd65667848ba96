//go:build !linux

package transport

import (
	"errors"
	"syscall"
)

// pollerSupported says whether RouterConfig.Poller takes effect here: the
// poller uses epoll, so elsewhere every connection keeps a reader goroutine.
const pollerSupported = false

var errNoPoller = errors.New("transport: poller: not supported on this system")

// poller is never created where pollerSupported is false; these methods
// exist so the Router compiles everywhere.
type poller struct{}

func newPoller(func(ConnID)) (*poller, error)             { return nil, errNoPoller }
func (p *poller) run()                                    {}
func (p *poller) stop()                                   {}
func (p *poller) arm(syscall.RawConn, ConnID, bool) error { return errNoPoller }
func tryRead(syscall.RawConn, []byte) (int, error)        { return 0, errNoPoller }

var errWouldBlock = errors.New("transport: would block")
