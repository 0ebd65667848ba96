package codec

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"
)

// sizer validates a message's fields against the limits and sums their
// encoded length, so that Append can reject a message before writing a byte
// and grow the destination once. Like decoder, its first error is sticky.
// Decode runs the same checks on what it read, which is what makes the
// encoding canonical: anything Decode accepts, Append accepts and writes back
// byte for byte.
type sizer struct {
	lim  Limits
	kind Kind
	n    int
	err  error
}

func (s *sizer) fixed(n int) { s.n += n }

func (s *sizer) tooLarge(field string, n, limit int) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: %v %s length %d exceeds limit %d", ErrTooLarge, s.kind, field, n, limit)
	}
}

func (s *sizer) invalid(field, why string) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: %v %s %s", ErrInvalidField, s.kind, field, why)
	}
}

// id checks an identifier that counts from 1.
func (s *sizer) id(field string, v uint64) {
	s.n += 8
	if v == 0 {
		s.invalid(field, "must be at least 1")
	}
}

func (s *sizer) str(field, v string) {
	s.n += 2 + len(v)
	if len(v) > s.lim.MaxString {
		s.tooLarge(field, len(v), s.lim.MaxString)
	} else if !utf8.ValidString(v) {
		s.invalid(field, "is not valid UTF-8")
	}
}

func (s *sizer) bytes(field string, p []byte) {
	s.n += 4 + len(p)
	if len(p) > s.lim.MaxPayload {
		s.tooLarge(field, len(p), s.lim.MaxPayload)
	}
}

// duration checks a positive whole number of milliseconds that fits a
// uint32; anything else would not survive the wire unchanged.
func (s *sizer) duration(field string, v time.Duration) {
	s.n += 4
	if v <= 0 || v%time.Millisecond != 0 || v/time.Millisecond > math.MaxUint32 {
		s.invalid(field, "must be a whole number of milliseconds between 1 and 4294967295")
	}
}

func (s *sizer) leader(h LeaderHint) {
	s.n += 8
	s.str("leader.client_addr", h.ClientAddr)
	if h.ID == 0 && h.ClientAddr != "" {
		s.invalid("leader", "has an address but ID 0 (unknown leader)")
	}
}

func (s *sizer) members(ms []Member) {
	s.n += 2
	if len(ms) > s.lim.MaxMembers {
		s.tooLarge("members", len(ms), s.lim.MaxMembers)
		return
	}
	for i, m := range ms {
		s.n += 8
		s.str("member.client_addr", m.ClientAddr)
		if m.ID == 0 {
			s.invalid("member.id", "must not be 0")
		} else if i > 0 && ms[i-1].ID >= m.ID {
			s.invalid("members", "must be sorted by ID without duplicates")
		}
	}
}

func (s *sizer) capabilities(cs []Capability) {
	s.n += 2
	if len(cs) > s.lim.MaxCapabilities {
		s.tooLarge("capabilities", len(cs), s.lim.MaxCapabilities)
		return
	}
	for i, c := range cs {
		s.str("capability.name", c.Name)
		s.str("capability.value", c.Value)
		if c.Name == "" {
			s.invalid("capability.name", "must not be empty")
		} else if i > 0 && cs[i-1].Name >= c.Name {
			s.invalid("capabilities", "must be sorted by name without duplicates")
		}
	}
}

// nilMessage is the error for a typed nil pointer passed as a Message.
func nilMessage(k Kind) error {
	return fmt.Errorf("%w: nil *%v", ErrInvalidField, k)
}

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func appendI64(b []byte, v int64) []byte  { return binary.BigEndian.AppendUint64(b, uint64(v)) }

// The length conversions below cannot truncate: appenders only run after
// the sizer checked every length against Limits, whose Validate caps strings
// and lists at 65535 and payloads at 1 GiB.

func appendStr(b []byte, s string) []byte {
	return append(appendU16(b, uint16(len(s))), s...)
}

func appendBytes(b []byte, p []byte) []byte {
	return append(appendU32(b, uint32(len(p))), p...)
}

func appendDuration(b []byte, d time.Duration) []byte {
	return appendU32(b, uint32(d/time.Millisecond))
}

func appendLeader(b []byte, h LeaderHint) []byte {
	return appendStr(appendU64(b, h.ID), h.ClientAddr)
}

func appendMembers(b []byte, ms []Member) []byte {
	b = appendU16(b, uint16(len(ms)))
	for _, m := range ms {
		b = appendStr(appendU64(b, m.ID), m.ClientAddr)
	}
	return b
}

func appendCapabilities(b []byte, cs []Capability) []byte {
	b = appendU16(b, uint16(len(cs)))
	for _, c := range cs {
		b = appendStr(appendStr(b, c.Name), c.Value)
	}
	return b
}

// SortCapabilities sorts cs by Name in the order a message requires. It does
// not remove duplicates; Append rejects them.
func SortCapabilities(cs []Capability) {
	slices.SortFunc(cs, func(a, b Capability) int { return cmp.Compare(a.Name, b.Name) })
}

// SortMembers sorts ms by ID in the order a message requires. It does not
// remove duplicates; Append rejects them.
func SortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
}
