package fsm

import (
	"encoding/binary"
	"fmt"
)

// This file holds the byte-level helpers shared by the command, result and
// snapshot encodings. Integers are unsigned varints except fixed-size ids,
// hashes and time stamps, which are big-endian so that they sort and compare
// as bytes.

func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader decodes from a byte slice. The first error sticks; later reads
// return zero values, so a decoder checks err once at the end.
type reader struct {
	b   []byte
	err error
	// payloads, when set, shares equal server request payloads read from
	// a snapshot (see interner).
	payloads *interner
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (r *reader) u8() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail("truncated")
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	// A padded varint (a last byte of zero) would give one value two
	// encodings; only the minimal form is accepted.
	if n > 1 && r.b[n-1] == 0 {
		r.fail("non-minimal varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length or element count and checks it against limit before
// anything is allocated for it.
func (r *reader) count(limit int) int {
	v := r.uvarint()
	if r.err != nil {
		return 0
	}
	if v > uint64(limit) {
		r.fail("count %d exceeds limit %d", v, limit)
		return 0
	}
	return int(v)
}

// bytes returns a sub-slice of the input (no copy) of at most limit bytes.
func (r *reader) bytes(limit int) []byte {
	n := r.count(limit)
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail("truncated")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string(limit int) string { return string(r.bytes(limit)) }

func (r *reader) fixed(dst []byte) {
	if r.err != nil {
		return
	}
	if len(r.b) < len(dst) {
		r.fail("truncated")
		return
	}
	copy(dst, r.b)
	r.b = r.b[len(dst):]
}

// done fails if bytes are left over, so that every encoding has exactly one
// valid form.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}
