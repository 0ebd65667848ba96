package raftnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"time"
)

// The framing is dragonboat's own TCP transport's (internal/transport/tcp.go),
// so that a capture reads the same: two magic bytes, an 18-byte header
// (method, payload size, header CRC, payload CRC; big-endian), the payload.
// A connection that sends snapshot chunks ends with the poison bytes {0, 0},
// which the receiver acknowledges with the same two bytes.
const (
	headerSize = 18
	// MethodRaft frames a marshalled raftpb.MessageBatch.
	MethodRaft uint16 = 100
	// MethodSnapshot frames a marshalled raftpb.Chunk.
	MethodSnapshot uint16 = 200
	// pieceSize is how much of a payload is read (and allocated) at a time,
	// so that a frame costs memory only as its bytes arrive.
	pieceSize = 1 << 20
)

var (
	magic  = [2]byte{0xAE, 0x7D}
	poison = [2]byte{0, 0}

	errPoison    = errors.New("raftnet: poison received")
	errBadMagic  = errors.New("raftnet: bad magic number")
	errBadHeader = errors.New("raftnet: bad frame header")
	errTooLarge  = errors.New("raftnet: frame too large")
	errBadCRC    = errors.New("raftnet: payload checksum mismatch")
)

// EncodeFrame returns the magic, header and payload of one frame. The header
// announces announce bytes (len(payload) for a real frame; tests forge
// others).
func EncodeFrame(method uint16, payload []byte, announce uint64) []byte {
	b := make([]byte, 2+headerSize, 2+headerSize+len(payload))
	copy(b, magic[:])
	h := b[2:]
	binary.BigEndian.PutUint16(h, method)
	binary.BigEndian.PutUint64(h[2:], announce)
	binary.BigEndian.PutUint32(h[14:], crc32.ChecksumIEEE(payload))
	binary.BigEndian.PutUint32(h[10:], crc32.ChecksumIEEE(h))
	return append(b, payload...)
}

type header struct {
	method uint16
	size   uint64
	crc    uint32
}

func decodeHeader(h []byte) (header, error) {
	got := binary.BigEndian.Uint32(h[10:])
	var c [headerSize]byte
	copy(c[:], h)
	binary.BigEndian.PutUint32(c[10:], 0)
	if crc32.ChecksumIEEE(c[:]) != got {
		return header{}, fmt.Errorf("%w: header checksum", errBadHeader)
	}
	hd := header{method: binary.BigEndian.Uint16(h), size: binary.BigEndian.Uint64(h[2:]), crc: binary.BigEndian.Uint32(h[14:])}
	if hd.method != MethodRaft && hd.method != MethodSnapshot {
		return header{}, fmt.Errorf("%w: method %d", errBadHeader, hd.method)
	}
	if hd.size == 0 {
		return header{}, fmt.Errorf("%w: empty payload", errBadHeader)
	}
	return hd, nil
}

// readMagic waits up to idle for the next frame's magic number.
func readMagic(c net.Conn, idle time.Duration) error {
	var m [2]byte
	if err := c.SetReadDeadline(time.Now().Add(idle)); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, m[:]); err != nil {
		return err
	}
	switch m {
	case magic:
		return nil
	case poison:
		return errPoison
	default:
		return errBadMagic
	}
}

// readFrame reads a header and its payload (after the magic) into scratch
// when it fits, else into new memory. A payload announced larger than
// maxFrame is refused before anything is allocated; below it, new memory
// grows piece by piece as bytes arrive, each piece within timeout.
// dragonboat's decoders copy what they keep, so scratch may be reused once
// the payload is decoded.
func readFrame(c net.Conn, maxFrame uint64, timeout time.Duration, scratch []byte) (header, []byte, error) {
	var hb [headerSize]byte
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return header{}, nil, err
	}
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		return header{}, nil, err
	}
	h, err := decodeHeader(hb[:])
	if err != nil {
		return header{}, nil, err
	}
	if h.size > maxFrame {
		return header{}, nil, fmt.Errorf("%w: %d bytes announced, limit %d", errTooLarge, h.size, maxFrame)
	}
	buf := scratch[:0]
	if uint64(cap(buf)) < h.size {
		buf = make([]byte, 0, min(h.size, pieceSize))
	}
	for uint64(len(buf)) < h.size {
		n := int(min(h.size-uint64(len(buf)), pieceSize))
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return header{}, nil, err
		}
		if cap(buf)-len(buf) >= n {
			buf = buf[:len(buf)+n]
		} else {
			buf = append(buf, make([]byte, n)...)
		}
		if _, err := io.ReadFull(c, buf[len(buf)-n:]); err != nil {
			return header{}, nil, err
		}
	}
	if crc32.ChecksumIEEE(buf) != h.crc {
		return header{}, nil, errBadCRC
	}
	return h, buf, nil
}

// writeFrame writes one frame, each megabyte within timeout.
func writeFrame(c net.Conn, method uint16, payload []byte, timeout time.Duration) error {
	var hb [2 + headerSize]byte
	copy(hb[:], magic[:])
	h := hb[2:]
	binary.BigEndian.PutUint16(h, method)
	binary.BigEndian.PutUint64(h[2:], uint64(len(payload)))
	binary.BigEndian.PutUint32(h[14:], crc32.ChecksumIEEE(payload))
	binary.BigEndian.PutUint32(h[10:], crc32.ChecksumIEEE(h))
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write(hb[:]); err != nil {
		return err
	}
	for len(payload) > 0 {
		n := min(len(payload), pieceSize)
		if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		if _, err := c.Write(payload[:n]); err != nil {
			return err
		}
		payload = payload[n:]
	}
	return nil
}
