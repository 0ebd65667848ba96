package codec

import (
	"encoding/binary"
	"fmt"
	"time"
)

// decoder reads fields from the body of one frame. Its first error is sticky:
// once a read fails every later read returns a zero value, so a message's
// decodeFields reads all its fields in order and returns d.err once, the way
// encoding/binary readers and bufio.Scanner report errors.
type decoder struct {
	b    []byte // the fields not read yet
	lim  Limits
	kind Kind
	err  error
}

// finish reports the first error, or ErrTrailingBytes if bytes remain after
// the last field.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d bytes after the last field of %v", ErrTrailingBytes, len(d.b), d.kind)
	}
	return d.err
}

// take returns the next n bytes (aliasing the frame) or records ErrTruncated.
// Callers check n against a limit first; take checks it against what is left,
// so no caller allocates for a length the frame cannot hold.
func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: %v %s needs %d bytes, %d left", ErrTruncated, d.kind, field, n, len(d.b))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// tooLarge records ErrTooLarge for a length prefix over its limit.
func (d *decoder) tooLarge(field string, n uint64, limit int) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %v %s length %d exceeds limit %d", ErrTooLarge, d.kind, field, n, limit)
	}
}

func (d *decoder) u8(field string) uint8 {
	if p := d.take(1, field); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16(field string) uint16 {
	if p := d.take(2, field); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32(field string) uint32 {
	if p := d.take(4, field); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64(field string) uint64 {
	if p := d.take(8, field); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) i64(field string) int64 { return int64(d.u64(field)) }

func (d *decoder) code(field string) Code { return Code(d.u8(field)) }

// duration reads uint32 milliseconds.
func (d *decoder) duration(field string) time.Duration {
	return time.Duration(d.u32(field)) * time.Millisecond
}

// str reads a u16 length and that many bytes as a string. The length is
// checked against MaxString before the string is allocated.
func (d *decoder) str(field string) string {
	n := d.u16(field)
	if d.err != nil {
		return ""
	}
	if int(n) > d.lim.MaxString {
		d.tooLarge(field, uint64(n), d.lim.MaxString)
		return ""
	}
	return string(d.take(int(n), field))
}

// bytes reads a u32 length and returns that many bytes aliasing the frame
// (nil when the length is 0). The length is compared as uint64 so that a
// claimed 4 GiB never wraps on 32-bit platforms.
func (d *decoder) bytes(field string) []byte {
	n := d.u32(field)
	if d.err != nil || n == 0 {
		return nil
	}
	if uint64(n) > uint64(d.lim.MaxPayload) {
		d.tooLarge(field, uint64(n), d.lim.MaxPayload)
		return nil
	}
	return d.take(int(n), field)
}

func (d *decoder) sessionID(field string) (id SessionID) {
	copy(id[:], d.take(len(id), field))
	return id
}

func (d *decoder) secret(field string) (s Secret) {
	copy(s[:], d.take(len(s), field))
	return s
}

// leader reads a LeaderHint. Every message names its hint "leader"; the
// field names are constants so that a successful read builds no strings.
func (d *decoder) leader() LeaderHint {
	return LeaderHint{ID: d.u64("leader.id"), ClientAddr: d.str("leader.client_addr")}
}

// count reads a u16 list count, checks it against limit and checks that the
// remaining bytes could hold that many elements of at least minSize bytes
// each, so that a short frame never makes the caller allocate a long slice.
func (d *decoder) count(field string, limit, minSize int) int {
	n := int(d.u16(field))
	if d.err != nil {
		return 0
	}
	if n > limit {
		d.tooLarge(field, uint64(n), limit)
		return 0
	}
	if n*minSize > len(d.b) {
		d.err = fmt.Errorf("%w: %v %s claims %d elements of at least %d bytes, %d bytes left", ErrTruncated, d.kind, field, n, minSize, len(d.b))
		return 0
	}
	return n
}

// members reads a u16-counted list of (u64 id, string address).
func (d *decoder) members() []Member {
	n := d.count("members", d.lim.MaxMembers, 8+2)
	if n == 0 {
		return nil
	}
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: d.u64("member.id"), ClientAddr: d.str("member.client_addr")}
	}
	return ms
}

// capabilities reads a u16-counted list of (string name, string value).
func (d *decoder) capabilities() []Capability {
	n := d.count("capabilities", d.lim.MaxCapabilities, 2+2)
	if n == 0 {
		return nil
	}
	cs := make([]Capability, n)
	for i := range cs {
		cs[i] = Capability{Name: d.str("capability.name"), Value: d.str("capability.value")}
	}
	return cs
}
