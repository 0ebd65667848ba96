package codec

import (
	"bytes"
	"testing"
)

// FuzzDecode checks that Decode never panics and that every frame it accepts
// re-encodes to identical bytes, under default and under tight limits. The
// seed corpus is every fixture plus a few malformed frames; crashers found by
// `go test -fuzz` are kept under testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, m := range fixtures {
		frame, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add([]byte{})
	f.Add([]byte("ZR\x01"))
	f.Add(hdr(KindQuery, u64(1), []byte{0}, u32(0xFFFFFFFF), []byte("abc")))
	f.Add(hdr(KindSessionCreated, sid16, u64(1), u32(1000), u32(10000), u64(1), u16(65535)))
	tight := Limits{MaxFrame: 256, MaxPayload: 64, MaxCapabilities: 3, MaxString: 8, MaxMembers: 3}
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, lim := range []*Limits{nil, &tight} {
			m, err := Decode(frame, lim)
			if err != nil {
				if m != nil {
					t.Fatalf("Decode returned %+v with error %v", m, err)
				}
				continue
			}
			again, err := Append(nil, m, lim)
			if err != nil {
				t.Fatalf("Decode accepted % x as %+v but Append refuses it: %v", frame, m, err)
			}
			if !bytes.Equal(again, frame) {
				t.Fatalf("not canonical: decoded % x as %+v, re-encoded % x", frame, m, again)
			}
		}
	})
}
