package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// ZMTP 3 frame flags (https://rfc.zeromq.org/spec/23/, "Framing").
const (
	flagMore     = 0x01
	flagLong     = 0x02
	flagCommand  = 0x04
	flagReserved = 0xF8

	// greetingLen is the fixed size of the ZMTP 3 greeting that precedes
	// the first frame.
	greetingLen = 64
	// maxShortFrame is the largest body a short (2-byte) header describes.
	maxShortFrame = 255
)

// ZMTP command names this package reacts to after the handshake.
const (
	cmdPing  = "PING"
	cmdPong  = "PONG"
	cmdError = "ERROR"
	// maxPingContext is the largest PING context echoed in a PONG (ZMTP
	// 3.1 allows 16 bytes); a longer context is cut so a peer cannot make us
	// echo large bodies.
	maxPingContext = 16
)

// msgKind says what readMessage found.
type msgKind uint8

const (
	kindData    msgKind = iota // a single-frame data message: deliver it
	kindCommand                // a ZMTP command frame: never delivered
	kindDropped                // a multi-part data message: discarded whole
)

// writeFrame appends one frame (header and body) to w. bufio.Writer errors
// are sticky, so only the last write's error needs checking.
func writeFrame(w *bufio.Writer, flags byte, body []byte) error {
	if n := len(body); n > maxShortFrame {
		var hdr [9]byte
		hdr[0] = flags | flagLong
		binary.BigEndian.PutUint64(hdr[1:], uint64(n))
		_, _ = w.Write(hdr[:])
	} else {
		_ = w.WriteByte(flags)
		_ = w.WriteByte(byte(n))
	}
	_, err := w.Write(body)
	return err
}

// appendFrameHeader appends the header of a frame of n body bytes.
func appendFrameHeader(dst []byte, flags byte, n int) []byte {
	if n > maxShortFrame {
		dst = append(dst, flags|flagLong)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, flags, byte(n))
}

// writeCommand appends one command frame: name length, name, data.
func writeCommand(w *bufio.Writer, name string, data []byte) error {
	body := make([]byte, 0, 1+len(name)+len(data))
	body = append(body, byte(len(name)))
	body = append(body, name...)
	body = append(body, data...)
	return writeFrame(w, flagCommand, body)
}

// readHeader reads one frame header and checks the announced size against
// limit before the caller allocates anything. A clean end of stream before
// the first byte is io.EOF; a stream cut inside the header is
// io.ErrUnexpectedEOF.
func readHeader(br *bufio.Reader, limit int) (flags byte, size int, err error) {
	flags, err = br.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	if flags&flagReserved != 0 {
		return 0, 0, fmt.Errorf("%w: reserved flag bits 0x%02x set", ErrProtocol, flags)
	}
	var n uint64
	if flags&flagLong != 0 {
		b, err := br.Peek(8)
		if err != nil {
			return 0, 0, unexpected(err)
		}
		n = binary.BigEndian.Uint64(b)
		_, _ = br.Discard(8)
	} else {
		b, err := br.ReadByte()
		if err != nil {
			return 0, 0, unexpected(err)
		}
		n = uint64(b)
	}
	if n > uint64(limit) {
		return 0, 0, fmt.Errorf("%w: peer announced %d bytes, limit %d", ErrFrameTooLarge, n, limit)
	}
	return flags, int(n), nil
}

// unexpected turns io.EOF in the middle of a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readMessage reads the next message after the handshake. A single-frame
// data message is returned with kindData and a freshly allocated body the
// caller owns. A command frame is returned with kindCommand. A multi-part
// data message is read to its last frame without allocating its bodies and
// reported as kindDropped: zraft speaks single-frame messages only, and
// discarding keeps a peer from making us buffer an unbounded message.
// Body bytes beyond readFree are drawn from rd's budget when rd is set (a
// Router connection; see readBody).
func readMessage(br *bufio.Reader, limit int, rd *reading) ([]byte, msgKind, error) {
	multipart := false
	for {
		flags, size, err := readHeader(br, limit)
		if err != nil {
			if multipart {
				err = unexpected(err)
			}
			return nil, kindData, err
		}
		more := flags&flagMore != 0
		if flags&flagCommand != 0 {
			if more || multipart {
				return nil, kindData, fmt.Errorf("%w: command frame inside a multi-part message", ErrProtocol)
			}
			body, err := readBody(br, size, rd)
			if err != nil {
				return nil, kindData, unexpected(err)
			}
			return body, kindCommand, nil
		}
		if more || multipart {
			multipart = true
			if _, err := br.Discard(size); err != nil {
				return nil, kindData, unexpected(err)
			}
			if !more {
				return nil, kindDropped, nil
			}
			continue
		}
		body, err := readBody(br, size, rd)
		if err != nil {
			return nil, kindData, unexpected(err)
		}
		return body, kindData, nil
	}
}

// readBody reads a frame body of size bytes (size is at most the frame
// limit). Memory follows the bytes that arrive: a body of up to readFree
// bytes takes one exact allocation; a larger one starts at readFree and
// doubles as it fills, so a peer that announces a large frame and sends
// little costs little. With rd set (a Router connection), every byte of
// capacity beyond readFree is first acquired from the node-wide reading
// budget (waiting, and so not reading the connection, while the budget is
// spent), and the body must arrive whole within rd's frame-read timeout of
// its header, or the connection is closed. The bytes stay held (rd.held)
// until the caller releases them.
func readBody(br *bufio.Reader, size int, rd *reading) ([]byte, error) {
	if size <= readFree {
		body := make([]byte, size)
		if _, err := io.ReadFull(br, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	if rd != nil {
		defer rd.start()()
	}
	body := make([]byte, 0, readFree)
	for len(body) < size {
		if len(body) == cap(body) {
			grow := min(cap(body), size-len(body))
			if rd != nil {
				if err := rd.grow(grow); err != nil {
					return nil, err
				}
			}
			// An exact allocation, so that the capacity is what was
			// acquired.
			nb := make([]byte, len(body), len(body)+grow)
			copy(nb, body)
			body = nb
		}
		n, err := br.Read(body[len(body):min(cap(body), size)])
		body = body[:len(body)+n]
		if err != nil && len(body) < size {
			return nil, err
		}
	}
	return body, nil
}

// parseCommand splits a command frame body into its name and data.
func parseCommand(body []byte) (name string, data []byte, err error) {
	if len(body) == 0 || int(body[0]) > len(body)-1 {
		return "", nil, fmt.Errorf("%w: malformed command", ErrProtocol)
	}
	n := int(body[0])
	return string(body[1 : 1+n]), body[1+n:], nil
}

// pongFor returns the PONG data answering a PING's data (TTL then context).
func pongFor(ping []byte) []byte {
	if len(ping) < 2 {
		return nil
	}
	ctx := ping[2:]
	if len(ctx) > maxPingContext {
		ctx = ctx[:maxPingContext]
	}
	return append([]byte(nil), ctx...)
}

// guard is the net.Conn handed to zmq4.Open. Its Read passes bytes from the
// connection's buffered reader to zmq4 while parsing them as ZMTP: it counts
// the 64-byte greeting, then follows every frame header and fails before
// zmq4 has seen the complete length of a frame larger than the limit, so zmq4
// never allocates a peer-chosen size. During the handshake only single
// command frames are legal, so anything else (data frames, MORE flags,
// reserved bits) fails too; that bounds the handshake's memory to one frame.
// Writes and everything else go straight to the embedded net.Conn.
type guard struct {
	net.Conn
	r     *bufio.Reader
	limit uint64

	greetLeft int    // greeting bytes not yet passed through
	lenLeft   int    // length bytes of the current header not yet seen
	size      uint64 // length accumulated so far
	bodyLeft  uint64 // body bytes of the current frame not yet passed
	cmd       []byte // the start of the last command frame's body (ERROR's reason)
	err       error  // sticky: the first violation
	readErr   error  // the first error from the connection itself
}

// Read implements io.Reader for zmq4.
func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if err != nil && g.readErr == nil {
		g.readErr = err
	}
	if verr := g.scan(p[:n]); verr != nil {
		g.err = verr
		// The bytes are withheld: zmq4 must not see the offending length.
		return 0, verr
	}
	return n, err
}

// scan advances the parser over b and reports the first violation.
func (g *guard) scan(b []byte) error {
	for i := 0; i < len(b); {
		switch {
		case g.greetLeft > 0:
			k := min(g.greetLeft, len(b)-i)
			g.greetLeft -= k
			i += k
		case g.bodyLeft > 0:
			k := min(g.bodyLeft, uint64(len(b)-i))
			if room := maxRefusalBody - len(g.cmd); room > 0 {
				g.cmd = append(g.cmd, b[i:i+int(min(k, uint64(room)))]...)
			}
			g.bodyLeft -= k
			i += int(k)
		case g.lenLeft > 0:
			g.size = g.size<<8 | uint64(b[i])
			i++
			g.lenLeft--
			if g.lenLeft == 0 {
				if g.size > g.limit {
					return fmt.Errorf("%w: peer announced %d bytes in the handshake, limit %d", ErrFrameTooLarge, g.size, g.limit)
				}
				g.bodyLeft = g.size
			}
		default:
			f := b[i]
			i++
			if f&flagReserved != 0 || f&flagCommand == 0 || f&flagMore != 0 {
				return fmt.Errorf("%w: frame flags 0x%02x during the handshake", ErrProtocol, f)
			}
			g.size = 0
			g.cmd = g.cmd[:0]
			g.lenLeft = 1
			if f&flagLong != 0 {
				g.lenLeft = 8
			}
		}
	}
	return nil
}

// atBoundary reports whether the parser sits between frames, which it must
// once zmq4.Open returns (zmq4 reads exactly one frame at a time).
func (g *guard) atBoundary() bool {
	return g.greetLeft == 0 && g.lenLeft == 0 && g.bodyLeft == 0
}

// handshake runs the ZMTP 3 greeting and NULL-security handshake through
// zmq4.Open on nc, reading through br (which the data path keeps using, so
// bytes the peer sent right after READY are not lost). zmq4 panics on some
// malformed READY metadata (its Property decoder indexes without bounds
// checks), so a panic is recovered and reported as a handshake failure.
func handshake(nc net.Conn, br *bufio.Reader, limit int, typ zmq4.SocketType, id zmq4.SocketIdentity, server bool) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %w: zmq4 panicked: %v", ErrHandshake, ErrProtocol, p)
		}
	}()
	g := &guard{Conn: nc, r: br, limit: uint64(limit), greetLeft: greetingLen}
	if _, err := zmq4.Open(g, null.Security(), typ, id, server, nil); err != nil {
		if name, data, perr := parseCommand(g.cmd); !server && perr == nil && name == cmdError {
			return refusal(data)
		}
		if g.err != nil {
			return fmt.Errorf("%w: %w", ErrHandshake, g.err)
		}
		if g.readErr != nil && !errors.Is(g.readErr, io.EOF) {
			// zmq4 keeps only the text of the connection's error; the
			// error itself (a TLS alert, a reset) tells the caller more.
			return fmt.Errorf("%w: %w", ErrHandshake, g.readErr)
		}
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if !g.atBoundary() {
		return fmt.Errorf("%w: %w: handshake ended inside a frame", ErrHandshake, ErrProtocol)
	}
	return nil
}

// maxRefusalBody bounds the bytes of a handshake command the guard keeps, so
// that an ERROR command's reason can be reported.
const maxRefusalBody = 1 + len(cmdError) + 1 + 255

// refusalReason is the reason a Router gives in the ERROR command it sends
// in place of READY when it refuses a connection at a limit.
const refusalReason = "TooManyConnections"

// refusal turns the data of an ERROR command received in place of READY (a
// one-byte length and the reason, ZMTP 3.1) into Dial's error.
func refusal(data []byte) error {
	reason := ""
	if len(data) > 0 && int(data[0]) <= len(data)-1 {
		reason = string(data[1 : 1+int(data[0])])
	}
	if strings.HasPrefix(reason, refusalReason) {
		return fmt.Errorf("%w: %w: server said %q", ErrHandshake, ErrTooManyConnections, reason)
	}
	return fmt.Errorf("%w: %w: server sent ERROR %q", ErrHandshake, ErrProtocol, reason)
}

// refusalNotice is what a Router writes to a connection it refuses: a ZMTP
// 3.0 NULL greeting as a server and an ERROR command naming the limit.
func refusalNotice(limit string) []byte {
	g := make([]byte, greetingLen, greetingLen+64)
	g[0], g[9], g[10], g[11] = 0xFF, 0x7F, 3, 0
	copy(g[12:], "NULL")
	g[32] = 1 // as-server
	reason := refusalReason + ": " + limit
	body := append([]byte{byte(len(cmdError))}, cmdError...)
	body = append(body, byte(len(reason)))
	body = append(body, reason...)
	g = append(g, flagCommand, byte(len(body)))
	return append(g, body...)
}
