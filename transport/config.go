package transport

import (
	"crypto/tls"
	"fmt"
	"time"
)

// Bounds that Validate enforces on every configuration.
const (
	// minFrameSize keeps room for a libzmq READY command (socket type plus a
	// routing identity of up to 255 bytes), which passes the same guard.
	minFrameSize = 512
	// maxFrameSize keeps a frame length representable as int on every
	// platform and a single allocation within reason.
	maxFrameSize = 1 << 30
	// maxQueue bounds SendQueue so a misconfiguration cannot reserve
	// unbounded memory per connection.
	maxQueue = 1 << 20
)

// RouterConfig configures a Router. Start from DefaultRouterConfig; the zero
// value is not valid.
type RouterConfig struct {
	// Addr is the TCP address to listen on, "host:port" or "tcp://host:port".
	// Port 0 lets the OS choose (read it back with Router.Addr).
	// Default "127.0.0.1:0".
	Addr string
	// MaxFrameSize is the largest frame body, in bytes, accepted from a peer
	// or passed to Send. A peer that announces a larger frame (in the
	// handshake or later) is disconnected before anything is allocated.
	// Default 4 MiB (codec's default MaxFrame); between 512 and 1 GiB.
	MaxFrameSize int
	// MaxConns bounds connections that exist at once, handshaking or open.
	// A connection accepted beyond it is closed at once and counted in
	// RouterStats.RejectedConns. Default 10000; at least 1.
	MaxConns int
	// MaxHandshakes bounds connections in the TLS/ZMTP handshake at once,
	// so silent peers cannot hold every slot of MaxConns. A connection
	// accepted beyond it is closed at once and counted in
	// RouterStats.RejectedHandshakes. Default 256; between 1 and MaxConns.
	MaxHandshakes int
	// MaxConnsPerSource bounds connections from one source (one IPv4
	// address, or one IPv6 /64), handshaking or open, so that one host
	// cannot take all of MaxConns. A connection beyond it is closed at once
	// and counted in RouterStats.RejectedSourceConns. Default 1000 (a tenth
	// of the default MaxConns); at least 1 (a value above MaxConns acts as
	// MaxConns).
	MaxConnsPerSource int
	// MaxHandshakesPerSource bounds connections from one source in their
	// handshake at once, so that one host sending nothing (or a byte at a
	// time) cannot hold every handshake slot. A connection beyond it is
	// closed at once and counted in RouterStats.RejectedSourceHandshakes.
	// Default 32 (an eighth of the default MaxHandshakes); at least 1 (a
	// value above MaxHandshakes acts as MaxHandshakes).
	MaxHandshakesPerSource int
	// HandshakeTimeout bounds the TLS plus ZMTP handshake of one connection;
	// a peer that has not finished by then is closed and counted in
	// RouterStats.HandshakeTimeouts. Default 5 s; positive.
	HandshakeTimeout time.Duration
	// SendQueue is the number of frames each connection's outbound queue
	// holds. When it is full, Send returns ErrQueueFull and closes that
	// connection. Default 1024; between 1 and 1<<20.
	SendQueue int
	// SendQueueBytes bounds the bytes queued for one connection and not yet
	// handed to its socket. A peer that falls this far behind (it stopped
	// reading) is a slow consumer: Send returns an error wrapping
	// ErrSlowConsumer and ErrQueueFull and closes that connection, counted
	// in RouterStats.SlowConsumers. Default 8 MiB; at least MaxFrameSize,
	// so one frame of any accepted size always fits an empty queue.
	SendQueueBytes int
	// MaxQueuedBytes bounds the bytes queued on all connections together.
	// A Send that would pass it closes its connection as a slow consumer
	// when that connection already has bytes queued (it is behind); a
	// connection with an empty queue is given its frame from
	// QueueOverdraftBytes, so readers that keep up are served. Default
	// 512 MiB; at least MaxFrameSize.
	MaxQueuedBytes int64
	// QueueOverdraftBytes is the node-wide overdraft past MaxQueuedBytes
	// that only connections with an empty queue may use. A Send to such a
	// connection that would pass MaxQueuedBytes plus the overdraft closes it
	// as a slow consumer too (counted in SlowConsumersNode). Queued bytes
	// therefore never exceed MaxQueuedBytes + QueueOverdraftBytes, whatever
	// the number of connections. Default 32 MiB; not negative.
	QueueOverdraftBytes int64
	// MaxReadingBytes bounds the bytes of frames being read on all
	// connections together, beyond the first 4 KiB of each frame (which
	// every connection may hold on its own): a reader acquires body bytes
	// past 4 KiB from it before allocating them and gives them back once
	// the frame is handed to the Handler. A reader that finds it spent
	// waits, not reading its connection (TCP pushes back on the peer), and
	// is counted in RouterStats.ReadingWaits. Frames being read therefore
	// hold at most MaxConns × 4 KiB + MaxReadingBytes. Default 128 MiB; at
	// least MaxFrameSize, so any accepted frame can complete.
	MaxReadingBytes int64
	// FrameReadTimeout bounds the reading of a frame larger than 4 KiB,
	// from its header to its last byte, waits for MaxReadingBytes
	// included: a peer that has not sent it whole by then is closed with a
	// cause wrapping ErrFrameTimeout, counted in RouterStats.FrameTimeouts,
	// so that slow senders cannot hold the reading budget. Default 30 s
	// (4 MiB at about 1 Mbit/s); positive.
	FrameReadTimeout time.Duration
	// Linger bounds how long CloseConn and Close spend writing frames that
	// were queued before the close; what is not written by then is dropped.
	// Zero drops queued frames at once. Default 1 s; not negative.
	Linger time.Duration
	// TLS, when set, wraps every accepted connection in crypto/tls (server
	// side) before the ZMTP handshake. It must hold a certificate; set
	// ClientAuth to require client certificates. Default nil (plain TCP).
	TLS *tls.Config
	// Poller, on Linux and without TLS, parks connections that wait
	// between messages in one epoll instance owned by the Router instead
	// of each keeping a reader goroutine blocked in Read: a reader
	// goroutine is started when bytes arrive and ends when the connection
	// has nothing more to read, so an idle connection costs no goroutine
	// stack. With TLS (crypto/tls reads need their own goroutine) or on
	// other systems it has no effect and every connection keeps its
	// reader goroutine. Limits, ordering and Handler calls are the same
	// either way. Default false: a wake-up costs an epoll_ctl and a
	// goroutine start, a few percent of CPU when hundreds of connections
	// each wake for every message (docs/transport.md); a node turns it on
	// for its clients (node.Config.ClientPoller), where most connections
	// are idle between keep-alives.
	Poller bool
}

// DefaultRouterConfig returns the configuration documented on each field of
// RouterConfig. Each call returns a fresh value.
func DefaultRouterConfig() RouterConfig {
	return RouterConfig{
		Addr:             "127.0.0.1:0",
		MaxFrameSize:     4 << 20,
		MaxConns:         10000,
		MaxHandshakes:    256,
		HandshakeTimeout: 5 * time.Second,
		SendQueue:        1024,
		Linger:           time.Second,

		MaxConnsPerSource:      1000,
		MaxHandshakesPerSource: 32,
		SendQueueBytes:         8 << 20,
		MaxQueuedBytes:         512 << 20,
		QueueOverdraftBytes:    32 << 20,
		MaxReadingBytes:        128 << 20,
		FrameReadTimeout:       30 * time.Second,
		Poller:                 false,
	}
}

// Validate reports the first out-of-range field as an error wrapping
// ErrInvalidConfig.
func (c RouterConfig) Validate() error {
	switch {
	case c.Addr == "":
		return fmt.Errorf("%w: Addr is empty", ErrInvalidConfig)
	case c.MaxFrameSize < minFrameSize || c.MaxFrameSize > maxFrameSize:
		return fmt.Errorf("%w: MaxFrameSize %d not in [%d, %d]", ErrInvalidConfig, c.MaxFrameSize, minFrameSize, maxFrameSize)
	case c.MaxConns < 1:
		return fmt.Errorf("%w: MaxConns %d < 1", ErrInvalidConfig, c.MaxConns)
	case c.MaxHandshakes < 1 || c.MaxHandshakes > c.MaxConns:
		return fmt.Errorf("%w: MaxHandshakes %d not in [1, MaxConns=%d]", ErrInvalidConfig, c.MaxHandshakes, c.MaxConns)
	case c.MaxConnsPerSource < 1:
		return fmt.Errorf("%w: MaxConnsPerSource %d < 1", ErrInvalidConfig, c.MaxConnsPerSource)
	case c.MaxHandshakesPerSource < 1:
		return fmt.Errorf("%w: MaxHandshakesPerSource %d < 1", ErrInvalidConfig, c.MaxHandshakesPerSource)
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("%w: HandshakeTimeout %v not positive", ErrInvalidConfig, c.HandshakeTimeout)
	case c.SendQueue < 1 || c.SendQueue > maxQueue:
		return fmt.Errorf("%w: SendQueue %d not in [1, %d]", ErrInvalidConfig, c.SendQueue, maxQueue)
	case c.SendQueueBytes < c.MaxFrameSize:
		return fmt.Errorf("%w: SendQueueBytes %d below MaxFrameSize %d", ErrInvalidConfig, c.SendQueueBytes, c.MaxFrameSize)
	case c.MaxQueuedBytes < int64(c.MaxFrameSize):
		return fmt.Errorf("%w: MaxQueuedBytes %d below MaxFrameSize %d", ErrInvalidConfig, c.MaxQueuedBytes, c.MaxFrameSize)
	case c.QueueOverdraftBytes < 0:
		return fmt.Errorf("%w: QueueOverdraftBytes %d negative", ErrInvalidConfig, c.QueueOverdraftBytes)
	case c.MaxReadingBytes < int64(c.MaxFrameSize):
		return fmt.Errorf("%w: MaxReadingBytes %d below MaxFrameSize %d", ErrInvalidConfig, c.MaxReadingBytes, c.MaxFrameSize)
	case c.FrameReadTimeout <= 0:
		return fmt.Errorf("%w: FrameReadTimeout %v not positive", ErrInvalidConfig, c.FrameReadTimeout)
	case c.Linger < 0:
		return fmt.Errorf("%w: Linger %v negative", ErrInvalidConfig, c.Linger)
	case c.TLS != nil && len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil:
		return fmt.Errorf("%w: TLS config has no certificate", ErrInvalidConfig)
	}
	return nil
}

// DialConfig configures Dial. Start from DefaultDialConfig; the zero value is
// not valid.
type DialConfig struct {
	// MaxFrameSize is the largest frame body, in bytes, accepted from the
	// server or passed to Send. A server that announces a larger frame is
	// disconnected before anything is allocated, and Recv returns an error
	// wrapping ErrFrameTooLarge. Default 4 MiB; between 512 and 1 GiB.
	MaxFrameSize int
	// Timeout bounds the TCP dial plus the TLS and ZMTP handshakes (a
	// deadline on the context passed to Dial also applies). Default 5 s;
	// positive.
	Timeout time.Duration
	// SendQueue is the number of frames the outbound queue holds; when it is
	// full, Send returns ErrQueueFull and the connection is kept.
	// Default 1024; between 1 and 1<<20.
	SendQueue int
	// Linger bounds how long Close spends writing frames queued before it;
	// what is not written by then is dropped. Zero drops them at once.
	// Default 1 s; not negative.
	Linger time.Duration
	// TLS, when set, wraps the connection in crypto/tls (client side) before
	// the ZMTP handshake. An empty ServerName is filled from the address.
	// Set Certificates to present a client certificate. Default nil.
	TLS *tls.Config
}

// DefaultDialConfig returns the configuration documented on each field of
// DialConfig. Each call returns a fresh value.
func DefaultDialConfig() DialConfig {
	return DialConfig{
		MaxFrameSize: 4 << 20,
		Timeout:      5 * time.Second,
		SendQueue:    1024,
		Linger:       time.Second,
	}
}

// Validate reports the first out-of-range field as an error wrapping
// ErrInvalidConfig.
func (c DialConfig) Validate() error {
	switch {
	case c.MaxFrameSize < minFrameSize || c.MaxFrameSize > maxFrameSize:
		return fmt.Errorf("%w: MaxFrameSize %d not in [%d, %d]", ErrInvalidConfig, c.MaxFrameSize, minFrameSize, maxFrameSize)
	case c.Timeout <= 0:
		return fmt.Errorf("%w: Timeout %v not positive", ErrInvalidConfig, c.Timeout)
	case c.SendQueue < 1 || c.SendQueue > maxQueue:
		return fmt.Errorf("%w: SendQueue %d not in [1, %d]", ErrInvalidConfig, c.SendQueue, maxQueue)
	case c.Linger < 0:
		return fmt.Errorf("%w: Linger %v negative", ErrInvalidConfig, c.Linger)
	}
	return nil
}
