//go:build !unix

package transport

import (
	"errors"
	"syscall"
)

func writeOnce(syscall.RawConn, []byte) (int, error) {
	return 0, errors.New("transport: no non-blocking write on this platform")
}

const canWriteOnce = false
