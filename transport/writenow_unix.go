//go:build unix

package transport

import (
	"errors"
	"syscall"
)

// writeOnce writes b to rc's socket with one non-blocking write(2) and
// reports how much the socket took: 0 when its buffer is full (EAGAIN) or
// the call was interrupted, err for anything else.
func writeOnce(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), b)
		return true // never wait for the socket to become writable
	})
	if err != nil {
		return 0, err
	}
	switch {
	case werr == nil:
		return n, nil
	case errors.Is(werr, syscall.EAGAIN), errors.Is(werr, syscall.EINTR):
		return 0, nil
	default:
		return 0, werr
	}
}

const canWriteOnce = true
