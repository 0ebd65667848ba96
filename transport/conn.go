package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
)

// identityLen is the size of the random routing identity a Conn declares.
// The Router ignores it; a libzmq ROUTER uses it to route replies.
const identityLen = 16

// ConnStats is a snapshot of a client Conn's counters.
type ConnStats struct {
	// MsgsIn and BytesIn count frames returned by Recv and their bytes.
	MsgsIn, BytesIn uint64
	// MsgsOut and BytesOut count frames handed to the socket and their
	// bytes.
	MsgsOut, BytesOut uint64
	// MultipartDropped counts multi-part messages discarded by Recv.
	MultipartDropped uint64
}

// Conn is the client endpoint: one ZMTP 3 DEALER connection to one server.
// It never reconnects: when the connection dies, Send and Recv return an
// error wrapping ErrClosed and the cause, and the caller (the client
// library) decides whether and when to Dial again. Send, Close and Stats are
// safe for concurrent use; Recv calls are serialised.
type Conn struct {
	*link
	traffic   counters
	recvMu    sync.Mutex
	closeOnce sync.Once
}

// Dial connects to addr ("host:port" or "tcp://host:port"), runs the TLS
// handshake if cfg.TLS is set, then the ZMTP handshake as a DEALER with a
// random 16-byte routing identity, all within cfg.Timeout and ctx. Errors
// from the handshake wrap ErrHandshake; a timeout also matches
// context.DeadlineExceeded or os.ErrDeadlineExceeded.
func Dial(ctx context.Context, addr string, cfg DialConfig) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	addr = strings.TrimPrefix(addr, "tcp://")
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	// The deadline bounds every read and write of the handshakes; the
	// AfterFunc also aborts them when ctx is cancelled early.
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(aLongTimeAgo) })

	c := &Conn{}
	c.link = newLink(raw, nil, cfg.MaxFrameSize, cfg.Linger, &c.traffic)
	err = c.handshake(ctx, addr, cfg)
	switch fired := !stop(); {
	case fired || ctx.Err() != nil:
		// ctx ended: the deadline may have been moved into the past, and
		// the caller wants ctx's reason rather than an i/o timeout.
		err = fmt.Errorf("%w: %w", ErrHandshake, context.Cause(ctx))
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The socket deadline is ctx's deadline; its timer may simply not
		// have fired yet.
		err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
	}
	if err == nil {
		err = raw.SetDeadline(time.Time{})
	}
	if err != nil {
		c.releaseReader(true)
		_ = raw.Close()
		return nil, err
	}
	c.start(cfg.SendQueue)
	return c, nil
}

func (c *Conn) handshake(ctx context.Context, addr string, cfg DialConfig) error {
	if cfg.TLS != nil {
		tcfg := cfg.TLS.Clone()
		if tcfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				tcfg.ServerName = host
			}
		}
		tc := tls.Client(c.raw, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("%w: tls: %w", ErrHandshake, err)
		}
		c.nc = tc
	}
	c.br = pooledReader(c.nc)
	id := make(zmq4.SocketIdentity, identityLen)
	if _, err := rand.Read(id); err != nil {
		return fmt.Errorf("%w: identity: %w", ErrHandshake, err)
	}
	// Identities starting with a zero byte are reserved by ZMTP/libzmq.
	id[0] |= 0x80
	return handshake(c.nc, c.br, cfg.MaxFrameSize, zmq4.Dealer, id, false)
}

// RemoteAddr returns the server's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// Send queues frame and returns at once; the Conn owns frame from now on
// unless an error is returned. Errors: ErrFrameTooLarge for a frame over
// MaxFrameSize, ErrQueueFull when SendQueue frames are waiting (the
// connection is kept), an error wrapping ErrClosed once the connection is
// closed or dead.
func (c *Conn) Send(frame []byte) error {
	if len(frame) > c.limit {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(frame), c.limit)
	}
	switch err := c.enqueue(frame); {
	case errors.Is(err, ErrClosed):
		return c.err()
	default:
		return err
	}
}

// Recv blocks until the next single-frame message arrives and returns it
// (the caller owns it). ZMTP commands are handled internally (PING is
// answered) and multi-part messages are discarded. When the connection dies
// or is closed, Recv returns an error wrapping ErrClosed and the cause: for
// example io.EOF when the server closed it, ErrFrameTooLarge when the server
// announced an oversized frame, ErrProtocol for a framing violation.
func (c *Conn) Recv() ([]byte, error) {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	for {
		if c.closing() {
			return nil, c.err()
		}
		body, kind, err := c.readMsg()
		if err == nil && kind == kindCommand {
			err = c.command(body)
		}
		if err != nil {
			c.shutdown(err, false)
			return nil, c.err()
		}
		switch kind {
		case kindData:
			c.traffic.msgsIn.Add(1)
			c.traffic.bytesIn.Add(uint64(len(body)))
			return body, nil
		case kindDropped:
			c.traffic.multipart.Add(1)
		}
	}
}

// err returns the reason the connection is closed, always wrapping
// ErrClosed. It is only called once closing has begun.
func (c *Conn) err() error {
	c.mu.Lock()
	cause := c.cause
	c.mu.Unlock()
	switch {
	case cause == nil:
		return ErrClosed
	case errors.Is(cause, ErrClosed):
		return cause
	default:
		return fmt.Errorf("%w: %w", ErrClosed, cause)
	}
}

// Close writes frames already queued for up to Linger, closes the
// connection and waits for its writer goroutine. A blocked Recv returns
// ErrClosed. Later calls do nothing and return nil.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.shutdown(nil, true)
		c.writers.Wait()
		_ = c.raw.Close()
		_ = c.nc.Close()
	})
	return nil
}

// Stats returns a snapshot of the counters.
func (c *Conn) Stats() ConnStats {
	return ConnStats{
		MsgsIn:           c.traffic.msgsIn.Load(),
		BytesIn:          c.traffic.bytesIn.Load(),
		MsgsOut:          c.traffic.msgsOut.Load(),
		BytesOut:         c.traffic.bytesOut.Load(),
		MultipartDropped: c.traffic.multipart.Load(),
	}
}
