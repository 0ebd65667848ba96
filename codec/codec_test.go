package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// randString returns valid UTF-8 of at most max bytes, mixing ASCII and
// multi-byte runes.
func randString(r *rand.Rand, max int) string {
	runes := []rune("abcxyz019:/._-é€😀")
	var b strings.Builder
	n := r.Intn(max + 1)
	for {
		c := string(runes[r.Intn(len(runes))])
		if b.Len()+len(c) > n {
			return b.String()
		}
		b.WriteString(c)
	}
}

func randBytes(r *rand.Rand, max int) []byte {
	n := r.Intn(max + 1)
	if n == 0 {
		return nil // empty payloads decode as nil
	}
	p := make([]byte, n)
	r.Read(p)
	return p
}

func randU64(r *rand.Rand) uint64 {
	// Mix small values and full-width ones so both ends of the range appear.
	if r.Intn(2) == 0 {
		return uint64(r.Intn(100))
	}
	return r.Uint64()
}

func randLeader(r *rand.Rand, lim Limits) LeaderHint {
	if r.Intn(3) == 0 {
		return LeaderHint{}
	}
	return LeaderHint{ID: randU64(r) + 1, ClientAddr: randString(r, lim.MaxString)}
}

// randMessage returns a valid random message of kind k within lim.
func randMessage(r *rand.Rand, k Kind, lim Limits) Message {
	switch k {
	case KindCreateSession:
		m := &CreateSession{Nonce: randU64(r)}
		r.Read(m.Secret[:])
		seen := map[string]bool{}
		for range r.Intn(lim.MaxCapabilities + 1) {
			name := randString(r, lim.MaxString)
			if name == "" || seen[name] {
				continue
			}
			seen[name] = true
			m.Capabilities = append(m.Capabilities, Capability{Name: name, Value: randString(r, lim.MaxString)})
		}
		SortCapabilities(m.Capabilities)
		return m
	case KindContinueSession:
		m := &ContinueSession{Nonce: randU64(r)}
		r.Read(m.SessionID[:])
		r.Read(m.Secret[:])
		return m
	case KindKeepAlive:
		return &KeepAlive{Timestamp: int64(randU64(r)), AckedUpTo: randU64(r)}
	case KindClientRequest:
		id := randU64(r) + 1
		if id == 0 {
			id = 1
		}
		return &ClientRequest{RequestID: id, LowestPending: 1 + uint64(r.Int63n(int64(min(id, math.MaxInt64)))), Payload: randBytes(r, 300)}
	case KindQuery:
		return &Query{CorrelationID: randU64(r), Consistency: Consistency(r.Intn(256)), Payload: randBytes(r, 300)}
	case KindServerRequestAck:
		return &ServerRequestAck{RequestID: max(randU64(r), 1)}
	case KindCloseSession:
		return &CloseSession{Reason: Code(r.Intn(256))}
	case KindSessionCreated:
		m := &SessionCreated{
			Nonce:             randU64(r),
			KeepAliveInterval: time.Duration(1+r.Int63n(math.MaxUint32)) * time.Millisecond,
			SessionTimeout:    time.Duration(1+r.Int63n(math.MaxUint32)) * time.Millisecond,
			LeaderID:          randU64(r),
		}
		r.Read(m.SessionID[:])
		id := uint64(0)
		for range r.Intn(lim.MaxMembers + 1) {
			id += 1 + uint64(r.Intn(1000))
			m.Members = append(m.Members, Member{ID: id, ClientAddr: randString(r, lim.MaxString)})
		}
		return m
	case KindSessionContinued:
		return &SessionContinued{Nonce: randU64(r)}
	case KindSessionRejected:
		return &SessionRejected{Nonce: randU64(r), Reason: Code(r.Intn(256)), Leader: randLeader(r, lim), Message: randString(r, lim.MaxString)}
	case KindSessionClosed:
		return &SessionClosed{Reason: Code(r.Intn(256)), Leader: randLeader(r, lim), Message: randString(r, lim.MaxString)}
	case KindKeepAliveResponse:
		return &KeepAliveResponse{Timestamp: int64(randU64(r))}
	case KindClientResponse:
		return &ClientResponse{RequestID: max(randU64(r), 1), Result: randBytes(r, 300)}
	case KindRequestError:
		return &RequestError{RequestID: randU64(r), Reason: Code(r.Intn(256)), AppCode: r.Uint32(), Message: randString(r, lim.MaxString), Leader: randLeader(r, lim)}
	case KindServerRequest:
		return &ServerRequest{RequestID: max(randU64(r), 1), CreatedAt: int64(randU64(r)), Payload: randBytes(r, 300)}
	case KindQueryResponse:
		return &QueryResponse{CorrelationID: randU64(r), Result: randBytes(r, 300)}
	case KindQueryError:
		return &QueryError{CorrelationID: randU64(r), Reason: Code(r.Intn(256)), AppCode: r.Uint32(), Message: randString(r, lim.MaxString), Leader: randLeader(r, lim)}
	case KindNotification:
		return &Notification{Flags: uint8(r.Intn(2)), Payload: randBytes(r, 300)}
	}
	panic("randMessage: unknown kind " + k.String())
}

func knownKinds() []Kind {
	var ks []Kind
	for k := range 256 {
		if Kind(k).Known() {
			ks = append(ks, Kind(k))
		}
	}
	return ks
}

// TestRoundTrip encodes random valid messages of every kind, under default
// and under tight limits, and checks that decoding gives the message back
// and re-encoding gives the same bytes.
func TestRoundTrip(t *testing.T) {
	tight := Limits{MaxFrame: 4096, MaxPayload: 300, MaxCapabilities: 5, MaxString: 12, MaxMembers: 5}
	for _, lim := range []Limits{DefaultLimits(), tight} {
		r := rand.New(rand.NewSource(1))
		for _, k := range knownKinds() {
			for i := range 300 {
				m := randMessage(r, k, lim)
				prefix := []byte("prefix")
				frame, err := Append(prefix, m, &lim)
				if err != nil {
					t.Fatalf("%v #%d: Append(%+v): %v", k, i, m, err)
				}
				if !bytes.Equal(frame[:len(prefix)], []byte("prefix")) {
					t.Fatalf("%v: Append overwrote dst", k)
				}
				frame = frame[len(prefix):]
				got, err := Decode(frame, &lim)
				if err != nil {
					t.Fatalf("%v #%d: Decode(% x): %v", k, i, frame, err)
				}
				if !reflect.DeepEqual(got, m) {
					t.Fatalf("%v #%d: round trip\n got %+v\nwant %+v", k, i, got, m)
				}
				again, err := Append(nil, got, &lim)
				if err != nil || !bytes.Equal(again, frame) {
					t.Fatalf("%v #%d: re-encode = % x, %v; want % x", k, i, again, err, frame)
				}
			}
		}
	}
}

// TestAppendAllocatesNothing proves the reuse contract: with a buffer of
// sufficient capacity, Append allocates nothing for any kind.
func TestAppendAllocatesNothing(t *testing.T) {
	buf := make([]byte, 0, 4096)
	lim := DefaultLimits()
	for _, m := range fixtures {
		allocs := testing.AllocsPerRun(100, func() {
			var err error
			if _, err = Append(buf[:0], m, &lim); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Append(%v) allocates %v times per call, want 0", m.Kind(), allocs)
		}
	}
}

// hdr returns a header for kind k followed by parts.
func hdr(k Kind, parts ...[]byte) []byte {
	b := []byte{'Z', 'R', Version, byte(k)}
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func str(s string) []byte { return append(u16(uint16(len(s))), s...) }

var (
	secret32 = make([]byte, 32)
	sid16    = make([]byte, 16)
)

// TestDecodeRejects lists malformed frames and the error each must get.
func TestDecodeRejects(t *testing.T) {
	tooLongString := strings.Repeat("a", 257)
	cases := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrTruncated},
		{"short header", []byte("ZR\x01"), ErrTruncated},
		{"bad signature", []byte("ZX\x01\x07\x00"), ErrBadSignature},
		{"noise", []byte("GET / HTTP/1.1\r\n"), ErrBadSignature},
		{"version 0", []byte("ZR\x00\x07\x00"), ErrUnsupportedVersion},
		{"version 2", []byte("ZR\x02\x07\x00"), ErrUnsupportedVersion},
		{"kind 0", hdr(0), ErrUnknownKind},
		{"kind 0x08", hdr(0x08), ErrUnknownKind},
		{"kind 0x40", hdr(0x40), ErrUnknownKind},
		{"kind 0x4C", hdr(0x4C), ErrUnknownKind},
		{"notification flag bit 1", hdr(KindNotification, []byte{0x02}, u32(0)), ErrInvalidField},
		{"kind 0xFF", hdr(0xFF), ErrUnknownKind},
		// Truncation in each field type.
		{"truncated u8", hdr(KindCloseSession), ErrTruncated},
		{"truncated u16 list count", hdr(KindCreateSession, u64(1), secret32, []byte{0}), ErrTruncated},
		{"truncated u32", hdr(KindQueryError, u64(1), []byte{15}, []byte{0, 0}), ErrTruncated},
		{"truncated u64", hdr(KindKeepAlive, u64(1), []byte{0, 0, 0}), ErrTruncated},
		{"truncated i64", hdr(KindKeepAliveResponse, []byte{1, 2, 3, 4, 5, 6, 7}), ErrTruncated},
		{"truncated duration", hdr(KindSessionCreated, sid16, u64(1), []byte{0, 0, 3}), ErrTruncated},
		{"truncated session id", hdr(KindContinueSession, sid16[:15]), ErrTruncated},
		{"truncated secret", hdr(KindContinueSession, sid16, secret32[:31]), ErrTruncated},
		{"truncated string length", hdr(KindSessionClosed, []byte{1}, u64(0), []byte{0}), ErrTruncated},
		{"truncated string body", hdr(KindSessionClosed, []byte{1}, u64(0), u16(0), u16(5), []byte("abc")), ErrTruncated},
		{"truncated payload length", hdr(KindClientRequest, u64(1), u64(1), []byte{0, 0}), ErrTruncated},
		{"truncated payload body", hdr(KindClientRequest, u64(1), u64(1), u32(10), []byte("abc")), ErrTruncated},
		{"truncated leader id", hdr(KindSessionRejected, u64(1), []byte{1}, []byte{0, 0, 0, 0}), ErrTruncated},
		{"members claim more than the frame holds", hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(10000), u64(1), u16(3), u64(1), str("a")), ErrTruncated},
		{"truncated member", hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(10000), u64(1), u16(1), u64(1), u16(40)), ErrTruncated},
		{"truncated capability", hdr(KindCreateSession, u64(1), secret32, u16(1), str("name"), u16(3)), ErrTruncated},
		// Lengths over the limits.
		{"string over MaxString", hdr(KindSessionClosed, []byte{1}, u64(0), u16(0), str(tooLongString)), ErrTooLarge},
		{"payload claims 4 GiB", hdr(KindQuery, u64(1), []byte{0}, u32(math.MaxUint32), []byte("abc")), ErrTooLarge},
		{"too many capabilities", hdr(KindCreateSession, u64(1), secret32, u16(65)), ErrTooLarge},
		{"too many members", hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(10000), u64(1), u16(65)), ErrTooLarge},
		// Trailing bytes.
		{"trailing byte", hdr(KindServerRequestAck, u64(1), []byte{0}), ErrTrailingBytes},
		{"trailing after payload", hdr(KindClientResponse, u64(1), u32(1), []byte("ab")), ErrTrailingBytes},
		// Invalid values.
		{"capabilities unsorted", hdr(KindCreateSession, u64(1), secret32, u16(2), str("b"), str(""), str("a"), str("")), ErrInvalidField},
		{"capabilities duplicate", hdr(KindCreateSession, u64(1), secret32, u16(2), str("a"), str("1"), str("a"), str("2")), ErrInvalidField},
		{"capability empty name", hdr(KindCreateSession, u64(1), secret32, u16(1), str(""), str("x")), ErrInvalidField},
		{"members unsorted", hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(10000), u64(1), u16(2), u64(2), str("b"), u64(1), str("a")), ErrInvalidField},
		{"members duplicate", hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(10000), u64(1), u16(2), u64(1), str("b"), u64(1), str("a")), ErrInvalidField},
		{"member id 0", hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(10000), u64(1), u16(1), u64(0), str("a")), ErrInvalidField},
		{"zero keep-alive interval", hdr(KindSessionCreated, sid16, u64(1), u32(0), u32(10000), u64(1), u16(0)), ErrInvalidField},
		{"zero session timeout", hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(0), u64(1), u16(0)), ErrInvalidField},
		{"request id 0", hdr(KindClientRequest, u64(0), u64(0), u32(0)), ErrInvalidField},
		{"lowest pending 0", hdr(KindClientRequest, u64(3), u64(0), u32(0)), ErrInvalidField},
		{"lowest pending above request id", hdr(KindClientRequest, u64(3), u64(4), u32(0)), ErrInvalidField},
		{"server request id 0", hdr(KindServerRequest, u64(0), u64(0), u32(0)), ErrInvalidField},
		{"ack id 0", hdr(KindServerRequestAck, u64(0)), ErrInvalidField},
		{"response id 0", hdr(KindClientResponse, u64(0), u32(0)), ErrInvalidField},
		{"leader address without id", hdr(KindSessionClosed, []byte{1}, u64(0), str("tcp://x:1"), u16(0)), ErrInvalidField},
		{"invalid UTF-8", hdr(KindSessionClosed, []byte{1}, u64(0), u16(0), str("\xff\xfe")), ErrInvalidField},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(c.frame, nil)
			if !errors.Is(err, c.want) {
				t.Fatalf("Decode(% x) = %+v, %v; want %v", c.frame, m, err, c.want)
			}
			if m != nil {
				t.Errorf("Decode returned a message with an error: %+v", m)
			}
			if !strings.HasPrefix(err.Error(), "codec: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
		})
	}
}

// TestDecodeChecksLengthsBeforeAllocating decodes frames whose length
// prefixes claim far more than they hold and checks that the decoder
// allocates next to nothing for them.
func TestDecodeChecksLengthsBeforeAllocating(t *testing.T) {
	huge := Limits{MaxFrame: 1 << 30, MaxPayload: 1 << 30, MaxCapabilities: 65535, MaxString: 65535, MaxMembers: 65535}
	cases := []struct {
		name  string
		frame []byte
		lim   *Limits
		want  error
	}{
		{"4 GiB payload in 20 bytes", hdr(KindQuery, u64(1), []byte{0}, u32(math.MaxUint32), []byte("abc")), nil, ErrTooLarge},
		{"1 GiB payload under a 1 GiB limit", hdr(KindQuery, u64(1), []byte{0}, u32(1<<30), []byte("abc")), &huge, ErrTruncated},
		{"65535 members in a short frame", hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(10000), u64(1), u16(65535)), &huge, ErrTruncated},
		{"65535 capabilities in a short frame", hdr(KindCreateSession, u64(1), secret32, u16(65535)), &huge, ErrTruncated},
		{"64 KiB string in a short frame", hdr(KindSessionClosed, []byte{1}, u64(0), u16(0), u16(65535)), &huge, ErrTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(c.frame) > 64 {
				t.Fatalf("test frame is %d bytes; keep it short", len(c.frame))
			}
			const runs = 100
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				if _, err := Decode(c.frame, c.lim); !errors.Is(err, c.want) {
					t.Fatalf("Decode = %v, want %v", err, c.want)
				}
			}
			runtime.ReadMemStats(&after)
			// Error formatting costs a few hundred bytes; the claimed
			// lengths would cost kilobytes to gigabytes.
			if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun > 1024 {
				t.Errorf("Decode allocated %d bytes per call", perRun)
			}
		})
	}
}

// TestDecodeFrameLimit checks MaxFrame at the boundary: a frame of exactly
// MaxFrame decodes, one byte more is rejected before its header is read.
func TestDecodeFrameLimit(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxFrame = 1000
	lim.MaxPayload = 1000
	payload := make([]byte, 1000-HeaderLen-8-1-4)
	frame, err := Append(nil, &Query{CorrelationID: 1, Payload: payload}, &lim)
	if err != nil {
		t.Fatalf("Append at exactly MaxFrame: %v", err)
	}
	if len(frame) != lim.MaxFrame {
		t.Fatalf("frame is %d bytes, want %d", len(frame), lim.MaxFrame)
	}
	if _, err := Decode(frame, &lim); err != nil {
		t.Fatalf("Decode at exactly MaxFrame: %v", err)
	}
	long := append(frame, 0)
	if _, err := Decode(long, &lim); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Decode of MaxFrame+1 bytes = %v, want ErrTooLarge", err)
	}
	if _, err := Append(nil, &Query{CorrelationID: 1, Payload: append(payload, 0)}, &lim); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Append of MaxFrame+1 bytes = %v, want ErrTooLarge", err)
	}
}

// TestAppendRejects checks that Append refuses what Decode would refuse, and
// leaves dst untouched when it does.
func TestAppendRejects(t *testing.T) {
	lim := DefaultLimits()
	long := strings.Repeat("x", lim.MaxString+1)
	caps := make([]Capability, lim.MaxCapabilities+1)
	for i := range caps {
		caps[i] = Capability{Name: string(rune('A' + i))}
	}
	members := make([]Member, lim.MaxMembers+1)
	for i := range members {
		members[i] = Member{ID: uint64(i + 1)}
	}
	ok := &SessionCreated{KeepAliveInterval: time.Second, SessionTimeout: 10 * time.Second}
	cases := []struct {
		name string
		m    Message
		want error
	}{
		{"nil interface", nil, ErrInvalidField},
		{"typed nil", (*ClientRequest)(nil), ErrInvalidField},
		{"payload over MaxPayload", &ClientRequest{RequestID: 1, LowestPending: 1, Payload: make([]byte, lim.MaxPayload+1)}, ErrTooLarge},
		{"result over MaxPayload", &QueryResponse{Result: make([]byte, lim.MaxPayload+1)}, ErrTooLarge},
		{"message over MaxString", &SessionClosed{Message: long}, ErrTooLarge},
		{"leader address over MaxString", &QueryError{Leader: LeaderHint{ID: 1, ClientAddr: long}}, ErrTooLarge},
		{"too many capabilities", &CreateSession{Capabilities: caps}, ErrTooLarge},
		{"too many members", &SessionCreated{KeepAliveInterval: time.Second, SessionTimeout: time.Second, Members: members}, ErrTooLarge},
		{"unsorted capabilities", &CreateSession{Capabilities: []Capability{{Name: "b"}, {Name: "a"}}}, ErrInvalidField},
		{"duplicate capabilities", &CreateSession{Capabilities: []Capability{{Name: "a"}, {Name: "a"}}}, ErrInvalidField},
		{"unsorted members", &SessionCreated{KeepAliveInterval: time.Second, SessionTimeout: time.Second, Members: []Member{{ID: 2}, {ID: 1}}}, ErrInvalidField},
		{"sub-millisecond duration", &SessionCreated{KeepAliveInterval: time.Second + time.Microsecond, SessionTimeout: time.Second}, ErrInvalidField},
		{"negative duration", &SessionCreated{KeepAliveInterval: -time.Second, SessionTimeout: time.Second}, ErrInvalidField},
		{"duration over uint32 ms", &SessionCreated{KeepAliveInterval: time.Second, SessionTimeout: (math.MaxUint32 + 1) * time.Millisecond}, ErrInvalidField},
		{"request id 0", &ClientRequest{}, ErrInvalidField},
		{"lowest pending above id", &ClientRequest{RequestID: 1, LowestPending: 2}, ErrInvalidField},
		{"invalid UTF-8", &RequestError{Message: "\xc3"}, ErrInvalidField},
		{"leader address with id 0", &SessionRejected{Leader: LeaderHint{ClientAddr: "tcp://a:1"}}, ErrInvalidField},
	}
	if _, err := Encode(ok); err != nil {
		t.Fatalf("baseline SessionCreated: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := Append(dst, c.m, &lim)
			if !errors.Is(err, c.want) {
				t.Fatalf("Append = %v, want %v", err, c.want)
			}
			if string(out) != "keep" {
				t.Errorf("Append changed dst to %q on error", out)
			}
		})
	}
}

func TestDecodeAliasesPayload(t *testing.T) {
	frame, err := Encode(&ClientRequest{RequestID: 1, LowestPending: 1, Payload: []byte("abc")})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(frame, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := m.(*ClientRequest).Payload
	frame[len(frame)-1] = 'z'
	if string(p) != "abz" {
		t.Errorf("payload %q does not alias the frame as documented", p)
	}
	// The alias is capped so that appending to it cannot scribble on
	// whatever follows in the caller's buffer.
	if cap(p) != len(p) {
		t.Errorf("payload cap %d, want %d", cap(p), len(p))
	}
}

func TestUnknownCodesDecode(t *testing.T) {
	for _, c := range []Code{23, 99, 255} {
		frame := hdr(KindCloseSession, []byte{byte(c)})
		m, err := Decode(frame, nil)
		if err != nil {
			t.Fatalf("Decode(CloseSession %d): %v", c, err)
		}
		if got := m.(*CloseSession).Reason; got != c || got.Known() || got.Retryable() {
			t.Errorf("reason = %v (known %v, retryable %v), want unknown, not retryable %d", got, got.Known(), got.Retryable(), c)
		}
	}
	m, err := Decode(hdr(KindQuery, u64(1), []byte{7}, u32(0)), nil)
	if err != nil {
		t.Fatalf("Decode(Query consistency 7): %v", err)
	}
	if c := m.(*Query).Consistency; c.Known() || c.String() != "Consistency(7)" {
		t.Errorf("consistency = %v, known %v", c, c.Known())
	}
}

func TestPeek(t *testing.T) {
	cases := []struct {
		name   string
		frame  []byte
		kind   Kind
		err    error
		id     uint64
		idOK   bool
		decErr error
	}{
		{"bad request payload", hdr(KindClientRequest, u64(77), u64(1), u32(50), []byte("x")), KindClientRequest, nil, 77, true, ErrTruncated},
		{"query with bad consistency length", hdr(KindQuery, u64(78)), KindQuery, nil, 78, true, ErrTruncated},
		{"id cut short", hdr(KindClientRequest, []byte{0, 0, 1}), KindClientRequest, nil, 0, false, ErrTruncated},
		{"other kind", hdr(KindServerRequestAck, u64(5), []byte{0}), KindServerRequestAck, nil, 0, false, ErrTrailingBytes},
		{"unknown kind", hdr(0x30, u64(5)), 0x30, ErrUnknownKind, 0, false, ErrUnknownKind},
		{"bad signature", []byte("XXXX"), 0, ErrBadSignature, 0, false, ErrBadSignature},
		{"short", []byte("ZR"), 0, ErrTruncated, 0, false, ErrTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode(c.frame, nil); !errors.Is(err, c.decErr) {
				t.Errorf("Decode = %v, want %v", err, c.decErr)
			}
			k, err := PeekHeader(c.frame)
			if k != c.kind || !errors.Is(err, c.err) || (c.err == nil && err != nil) {
				t.Errorf("PeekHeader = %v, %v; want %v, %v", k, err, c.kind, c.err)
			}
			id, ok := PeekID(c.frame)
			if id != c.id || ok != c.idOK {
				t.Errorf("PeekID = %d, %v; want %d, %v", id, ok, c.id, c.idOK)
			}
		})
	}
}

func TestNames(t *testing.T) {
	cases := []struct {
		got, want string
	}{
		{KindCreateSession.String(), "CreateSession"},
		{KindQueryError.String(), "QueryError"},
		{Kind(0x99).String(), "Kind(0x99)"},
		{CodeNotLeader.String(), "NotLeader"},
		{CodeUnsupported.String(), "Unsupported"},
		{Code(200).String(), "Code(200)"},
		{Linearizable.String(), "Linearizable"},
		{Stale.String(), "Stale"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	// Every known code and kind has a distinct name.
	names := map[string]bool{}
	for c := range 256 {
		if Code(c).Known() {
			n := Code(c).String()
			if names[n] || strings.HasPrefix(n, "Code(") {
				t.Errorf("code %d has name %q", c, n)
			}
			names[n] = true
		}
	}
	for _, k := range knownKinds() {
		if strings.HasPrefix(k.String(), "Kind(") {
			t.Errorf("kind 0x%02x has no name", byte(k))
		}
		if k.FromClient() != (k < 0x40) {
			t.Errorf("%v.FromClient() = %v", k, k.FromClient())
		}
	}
}

func TestRetryable(t *testing.T) {
	retryable := map[Code]bool{
		CodeNotLeader: true, CodeClusterUnavailable: true, CodeRateLimited: true, CodeTooManySessions: true,
		CodeOverloaded: true, CodeOutcomeUnknown: true, CodeTooManyInFlight: true, CodeShuttingDown: true,
		CodeOutOfOrder: true,
	}
	for c := range 256 {
		if got := Code(c).Retryable(); got != retryable[Code(c)] {
			t.Errorf("%v.Retryable() = %v", Code(c), got)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("DefaultLimits().Validate() = %v", err)
	}
	bad := []func(*Limits){
		func(l *Limits) { l.MaxFrame = 0 },
		func(l *Limits) { l.MaxFrame = 1<<30 + 1 },
		func(l *Limits) { l.MaxPayload = 0 },
		func(l *Limits) { l.MaxPayload = l.MaxFrame + 1 },
		func(l *Limits) { l.MaxCapabilities = -1 },
		func(l *Limits) { l.MaxCapabilities = 65536 },
		func(l *Limits) { l.MaxString = 0 },
		func(l *Limits) { l.MaxString = 65536 },
		func(l *Limits) { l.MaxMembers = 0 },
		func(l *Limits) { l.MaxMembers = 65536 },
	}
	for i, f := range bad {
		l := DefaultLimits()
		f(&l)
		if err := l.Validate(); !errors.Is(err, ErrInvalidLimits) {
			t.Errorf("case %d: Validate(%+v) = %v, want ErrInvalidLimits", i, l, err)
		}
	}
}

func TestSortHelpers(t *testing.T) {
	caps := []Capability{{Name: "z"}, {Name: "a", Value: "1"}, {Name: "m"}}
	SortCapabilities(caps)
	if _, err := Encode(&CreateSession{Capabilities: caps}); err != nil {
		t.Errorf("sorted capabilities rejected: %v", err)
	}
	ms := []Member{{ID: 3}, {ID: 1}, {ID: 2}}
	SortMembers(ms)
	if _, err := Encode(&SessionCreated{KeepAliveInterval: time.Second, SessionTimeout: time.Second, Members: ms}); err != nil {
		t.Errorf("sorted members rejected: %v", err)
	}
}

func TestPeekNonce(t *testing.T) {
	sid, secret := make([]byte, 16), make([]byte, 32)
	cases := []struct {
		name  string
		frame []byte
		nonce uint64
		ok    bool
	}{
		{"create with too many capabilities", hdr(KindCreateSession, u64(42), secret, []byte{0xff, 0xff}), 42, true},
		{"create cut short", hdr(KindCreateSession, []byte{0, 1}), 0, false},
		{"continue with trailing bytes", hdr(KindContinueSession, sid, secret, u64(43), []byte{1}), 43, true},
		{"continue cut short", hdr(KindContinueSession, sid, secret, []byte{0, 0, 1}), 0, false},
		{"other kind", hdr(KindClientRequest, u64(5), u64(1), u32(0)), 0, false},
		{"bad signature", []byte("XXXXXXXXXXXXXXXX"), 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if n, ok := PeekNonce(c.frame); n != c.nonce || ok != c.ok {
				t.Errorf("PeekNonce = %d, %v; want %d, %v", n, ok, c.nonce, c.ok)
			}
		})
	}
}

// TestNotificationFlags: a Notification with a flag bit other than "lost"
// is refused both when encoding and when decoding.
func TestNotificationFlags(t *testing.T) {
	if _, err := Encode(&Notification{Flags: 0x02}); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("encode flags 0x02: %v", err)
	}
	frame, err := Encode(&Notification{Flags: NotificationLost, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(frame, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := m.(*Notification); n.Flags != NotificationLost || string(n.Payload) != "x" {
		t.Fatalf("decoded %+v", n)
	}
	frame[HeaderLen] = 0x81
	if _, err := Decode(frame, nil); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("decode flags 0x81: %v", err)
	}
}
